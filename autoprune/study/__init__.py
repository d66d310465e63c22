"""The books of a search: run directory, trials table, state, identity, tracking, progress."""
