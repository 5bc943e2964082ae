"""LLaVA-OneVision-Qwen2-0.5B (SigLIP + projector + Qwen2-0.5B): the paper's recipe, one GPU.

    python -m leanpo_jax.train --config configs/llava_ov_0p5b.py --workdir runs/ov05 \
        --config.model.init_from=/models/llava-onevision-qwen2-0.5b-ov-hf \
        --config.data.pairs=pairs.jsonl --config.data.video_root=/data/videos

Paper defaults (docs/loss.md §2.5, §6): β 2.0, γ 0.5, α 0.1, λ_sft 0.5, lr 5e-7, linear decay
after 10% warmup, weight decay 0, 16 frames, LLM trained (tower and projector frozen), bf16
compute with f32 master weights. Every key is declared, with its range and a one-line doc, in
the blocks that leanpo_jax/train/config.py's SCHEMA lists; a misspelt key is refused.
"""

import ml_collections

from leanpo_jax.train.config import paper_video_config

PRESET = "llava-ov-qwen2-0.5b"


def get_config() -> ml_collections.ConfigDict:
    config = paper_video_config(PRESET)
    return config
