"""The embedded CPU configuration (ml_collections): small enough for a 2-core machine.

    python -m leanpo_jax.train --config configs/tiny.py --workdir /tmp/tiny_run

Use with `--config=configs/tiny.py` and override any key as `--config.loss.beta=1.5`. With no
data file set it generates the synthetic shapes corpus into WORKDIR/synthetic on the first run
(train split + an 8-record held-out split used for eval and the probe). Every key of every
block is declared once, with its range and a one-line doc, in the blocks that
leanpo_jax/train/config.py's SCHEMA lists (loss: train/step.py, optimizer: train/state.py,
data: data/config.py, generate: generate/config.py, mesh and distributed: config_schema.py);
an unknown key (--config.loss.bta=2) is refused, naming the nearest known one.
"""

import ml_collections

from leanpo_jax.generate.config import generate_config
from leanpo_jax.train.config import training_config


def get_config() -> ml_collections.ConfigDict:
    config = training_config("tiny")
    # With no data file: 8 synthetic records x 5 epochs = 20 steps of 2 pairs (seeing each pair
    # again is what lets a random tiny model's preference loss fall within 20 steps).
    config.data.synthetic = 8
    config.data.num_epochs = 5
    config.data.response_buckets = (16, 32)
    config.data.max_response_tokens = 32
    config.data.max_prompt_text_tokens = 48
    config.total_steps = 20
    # A tiny random model needs a far larger step than the paper's 5e-7 to move at all.
    config.optimizer.learning_rate = 5e-3
    config.optimizer.warmup_ratio = 0.1
    config.train.chunk_size = 64
    config.eval.every = 10
    config.probe.every = 5
    config.logging.log_every = 1
    config.checkpoint.every = 10
    config.checkpoint.max_to_keep = 2
    # Self-generated pairs (python -m leanpo_jax.generate): works as is on CPU with the seeded
    # random model (model.init_from unset); the reward filter stays off.
    config.generate = generate_config()
    config.generate.batch_size = 4
    config.generate.max_new_tokens = 24
    config.generate.max_prompt_text_tokens = 160
    # A random-init model decodes greedily into one repeated token (often whitespace): sample.
    config.generate.winner.temperature = 1.0
    config.generate.loser.temperature = 1.0
    return config
