"""Shipped per-device latency tables (CSV + JSON); installed as `lglsearch.latency_tables`."""
