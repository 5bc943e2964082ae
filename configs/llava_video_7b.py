"""LLaVA-Video-7B-Qwen2 (SigLIP + projector + Qwen2-7B): the paper's recipe, multi-GPU / TPU.

    python -m leanpo_jax.train --config configs/llava_video_7b.py --workdir runs/lv7b \
        --config.model.init_from=/models/LLaVA-Video-7B-Qwen2 \
        --config.data.pairs=pairs.jsonl --config.data.video_root=/data/videos

Paper defaults (shared/method.md §4, LLaVA-Video-7B-Qwen2 column; α as the LeanPO default
0.1): β 2.0, γ 0.5, λ_sft 0.5, lr 5e-7, linear decay after 10% warmup, weight decay 0, 16
frames, global batch 8, LLM trained (tower and projector frozen), bf16 compute, f32 master
weights and Adam state, FSDP over every device (mesh.fsdp = -1) and remat per layer.
Keys are documented in leanpo_jax/train/config.py, leanpo_jax/data/config.py and
leanpo_jax/train/sharding.py.
"""

import ml_collections

from leanpo_jax.train.config import training_config

PRESET = "llava-video-qwen2-7b"


def get_config() -> ml_collections.ConfigDict:
    config = training_config(PRESET)
    config.model.remat = True
    config.optimizer.learning_rate = 5e-7
    config.optimizer.schedule = "linear"
    config.optimizer.warmup_ratio = 0.1
    config.optimizer.weight_decay = 0.0
    config.data.num_frames = 16
    config.data.max_prompt_text_tokens = 256
    config.data.response_buckets = (128, 256, 512)
    config.data.max_response_tokens = 512
    # Per host; the global batch is batch_size x processes (8 on one 8-GPU host, as the paper).
    config.data.batch_size = 8
    config.data.num_workers = 2
    config.train.chunk_size = 256
    config.logging.log_every = 10
    config.checkpoint.every = 200
    return config
