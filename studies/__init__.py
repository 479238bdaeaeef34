"""One file per results table: RUNS and table(results) (see study.py)."""
