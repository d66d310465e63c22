"""The composition of the stages: search(), its typed config, its wall-clock limit."""
