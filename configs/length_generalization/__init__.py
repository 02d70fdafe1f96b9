"""length_generalization experiment configs (see experiments/length_generalization.py)."""
