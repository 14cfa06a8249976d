"""``python -m stdd_fast.bench``: how fast each path is on this machine, and how exact."""
