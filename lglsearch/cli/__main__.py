"""`python -m lglsearch.cli` (as torchrun launches it)."""

import sys

from lglsearch.cli import main

sys.exit(main())
