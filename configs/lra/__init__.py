"""lra experiment configs (see experiments/lra.py)."""
