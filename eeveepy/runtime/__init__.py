"""The operator runtime: the process contract, settings, lifecycle, key-value store, health."""
