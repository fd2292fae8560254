"""The multi-objective search: `run_search(SearchConfig(...))`, then `lglsearch.report.write_search_report`."""

from lglsearch.search.study import SearchConfig, SearchRun, default_out, run_search

__all__ = ["SearchConfig", "SearchRun", "default_out", "run_search"]
