"""`python -m lglsearch` runs the command line."""

import sys

from lglsearch.cli import main

sys.exit(main())
