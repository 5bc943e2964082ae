"""Training: sharding, state, the LeanPO step, trainer and checkpoints."""
