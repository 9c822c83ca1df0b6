"""Benchmark of modelreg's serving path (see bench/README.md); run it with `bench/run.py`."""
