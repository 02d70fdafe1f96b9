"""Benchmark cases for experiments/benchmark_mixers.py and benchmark_attention.py (one module per family)."""
