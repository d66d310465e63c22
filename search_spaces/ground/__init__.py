"""Ground utilities: errors, option checks, example inputs, JSON files, time limits."""
