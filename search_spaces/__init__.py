"""The shipped search spaces (YAML); installed as `lglsearch.search_spaces`."""
