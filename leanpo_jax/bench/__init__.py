"""Benchmarks: `python -m leanpo_jax.bench` (console script `leanpo-bench`); see __main__.py."""
