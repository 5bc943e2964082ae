"""The embedded CPU configuration (ml_collections): small enough for a 2-core machine.

Use with `--config=configs/tiny.py` and override any key as `--config.loss.beta=1.5`.
Later stages (model, data, training, generation) extend this same file.
"""

import ml_collections

from leanpo_jax.data.config import data_config


def loss_config() -> ml_collections.ConfigDict:
    """The preference objective (shared/method.md §2); paper defaults for LeanPO."""
    loss = ml_collections.ConfigDict()
    # Objective: "leanpo" | "simpo" (static smoothing) | "dpo" (needs reference log-probs) | "sft".
    loss.name = "leanpo"
    # β > 0: reward scale, reward = β · average token log-prob of the response.
    loss.beta = 2.0
    # γ ≥ 0: target reward margin inside the Bradley–Terry sigmoid.
    loss.gamma = 0.5
    # α in [0, 1): ε for pairs the policy currently ranks the wrong way (dynamic smoothing);
    # for "simpo" and "dpo" it is the static smoothing applied to every pair.
    loss.label_smoothing = 0.1
    # d: ε = α where Δ = avg_logp(chosen) − avg_logp(rejected) < d (paper: 0; d > 0 did worse).
    loss.smoothing_threshold = 0.0
    # "code" (γ inside both sigmoids, the authors' scripts) | "symmetric" (σ(−(βΔ − γ))).
    loss.smoothing_form = "code"
    # λ_sft ≥ 0: weight of the winner's token-mean NLL (paper: 0.5; 0.1 in one Qwen2-VL run).
    loss.sft_weight = 0.5
    # DPO only: "sigmoid" | "ipo" | "hinge".
    loss.dpo_kind = "sigmoid"
    return loss


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.loss = loss_config()
    config.data = data_config()
    return config
