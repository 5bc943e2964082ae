"""Qwen2-VL-7B-Instruct (native ViT + merger + Qwen2-7B with M-RoPE): the paper's Table 2 recipe.

    python -m leanpo_jax.train --config configs/qwen2_vl_7b.py --workdir runs/q2vl7b \
        --config.model.init_from=/models/Qwen2-VL-7B-Instruct \
        --config.data.pairs=pairs.jsonl --config.data.video_root=/data/videos

The authors' Qwen2-VL recipe (docs/loss.md §6): β 2.0, γ 0.5, α 0.1, λ_sft 0.5, lr 5e-7,
linear decay after 10% warmup, weight decay 0, 32 frames, ViT and merger frozen (the
merger is part of `vision_tower`), bf16 compute with f32 master weights, remat, FSDP over
every device. Videos are resized to the static bucket of the model config (448 x 448: 4,096
video tokens at 32 frames). Every key is declared in the blocks that leanpo_jax/train/config.py's
SCHEMA lists; a misspelt key is refused.
"""

import ml_collections

from leanpo_jax.train.config import paper_video_config

PRESET = "qwen2-vl-7b"


def get_config() -> ml_collections.ConfigDict:
    config = paper_video_config(PRESET)
    config.data.num_frames = 32
    config.train.chunk_size = 256
    return config
