"""The benchmark of issue 5: `python bench/run.py` (or `make bench`); see bench/README.md."""
