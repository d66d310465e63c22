"""Built-in names: the registry of searchers, models and datasets, the built-ins, the cache."""
