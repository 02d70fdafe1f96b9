"""recall experiment configs (see experiments/recall.py)."""
