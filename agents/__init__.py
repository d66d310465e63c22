"""Searchers (agents) that propose per-group pruning policies. Reach them by name via ``ap.search(searcher=...)``."""
