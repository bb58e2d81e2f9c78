"""Benchmarks of issue 6 (`make bench`, or `.venv/bin/python bench/run.py --help`); not part of `make test`."""
