"""Export a training checkpoint as a Hugging Face folder: `python -m leanpo_jax.export`."""
