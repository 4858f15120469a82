"""A client that drives a running server over a folder of photos (scripts/batch.py)."""
