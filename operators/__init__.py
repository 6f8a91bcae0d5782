"""The operators shipped with eeveepy, each runnable as ``python -m operators.<name>``."""
