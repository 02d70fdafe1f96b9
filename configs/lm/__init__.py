"""lm experiment configs (see experiments/lm.py)."""
