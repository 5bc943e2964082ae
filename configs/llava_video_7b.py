"""LLaVA-Video-7B-Qwen2 (SigLIP + projector + Qwen2-7B): the paper's recipe, multi-GPU / TPU.

    python -m leanpo_jax.train --config configs/llava_video_7b.py --workdir runs/lv7b \
        --config.model.init_from=/models/LLaVA-Video-7B-Qwen2 \
        --config.data.pairs=pairs.jsonl --config.data.video_root=/data/videos

Paper defaults (docs/loss.md §6, LLaVA-Video-7B-Qwen2 column; α as the LeanPO default
0.1): β 2.0, γ 0.5, λ_sft 0.5, lr 5e-7, linear decay after 10% warmup, weight decay 0, 16
frames, global batch 8, LLM trained (tower and projector frozen), bf16 compute, f32 master
weights and Adam state, FSDP over every device (mesh.fsdp = -1) and remat per layer.
Every key is declared, with its range and a one-line doc, in the blocks that
leanpo_jax/train/config.py's SCHEMA lists; a misspelt key is refused.
"""

import ml_collections

from leanpo_jax.train.config import paper_video_config

PRESET = "llava-video-qwen2-7b"


def get_config() -> ml_collections.ConfigDict:
    config = paper_video_config(PRESET)
    config.train.chunk_size = 256
    return config
