"""LLaVA-OneVision-Qwen2-0.5B (SigLIP + projector + Qwen2-0.5B): the paper's recipe, one GPU.

    python -m leanpo_jax.train --config configs/llava_ov_0p5b.py --workdir runs/ov05 \
        --config.model.init_from=/models/llava-onevision-qwen2-0.5b-ov-hf \
        --config.data.pairs=pairs.jsonl --config.data.video_root=/data/videos

Paper defaults (shared/method.md §2, §4): β 2.0, γ 0.5, α 0.1, λ_sft 0.5, lr 5e-7, linear decay
after 10% warmup, weight decay 0, 16 frames, LLM trained (tower and projector frozen), bf16
compute with f32 master weights. Keys are documented in leanpo_jax/train/config.py (loss,
model, optimizer, ...), leanpo_jax/data/config.py and leanpo_jax/train/sharding.py (mesh).
"""

import ml_collections

from leanpo_jax.train.config import paper_video_config

PRESET = "llava-ov-qwen2-0.5b"


def get_config() -> ml_collections.ConfigDict:
    config = paper_video_config(PRESET)
    return config
