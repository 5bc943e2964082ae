"""leanpo_jax: Lean Preference Optimization (LeanPO) for Video-LLMs in JAX/Flax.

Importing the package loads only jax (the loss library); models, data and training live in
subpackages that are imported on demand.
"""

from leanpo_jax.losses import (
    average_logps,
    dpo_loss,
    leanpo_loss,
    leanpo_objective,
    reduce_metrics,
    response_logps,
    sequence_logps,
    sft_loss,
    simpo_loss,
    sum_metrics,
)

__version__ = "0.1.0"

__all__ = [
    "average_logps",
    "dpo_loss",
    "leanpo_loss",
    "leanpo_objective",
    "reduce_metrics",
    "response_logps",
    "sequence_logps",
    "sft_loss",
    "simpo_loss",
    "sum_metrics",
]
