"""Small operators used by the tests and benchmarks."""
