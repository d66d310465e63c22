"""The command line: `autoprune ...` and the served driver process."""
