"""leanpo-eval's configuration when no --config is given: every block at its defaults, so
`--config.data.num_frames=32` and the like work without a file (leanpo_jax/train/config.py)."""

import ml_collections

from leanpo_jax.train.config import training_config


def get_config() -> ml_collections.ConfigDict:
    return training_config()
