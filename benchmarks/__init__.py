"""Benchmarks and soaks (see benchmarks/README.md). A package so the test suite can import the soak."""
