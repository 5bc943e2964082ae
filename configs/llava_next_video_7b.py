"""LLaVA-NeXT-Video-7B (CLIP ViT-L/14-336 + pooling + projector + Vicuna-7B): the paper's Table 1 recipe.

    python -m leanpo_jax.train --config configs/llava_next_video_7b.py --workdir runs/nv7b \
        --config.model.init_from=/models/LLaVA-NeXT-Video-7B-hf \
        --config.data.pairs=pairs.jsonl --config.data.video_root=/data/videos

Paper defaults (docs/loss.md §2.5, §6): β 2.0, γ 0.5, α 0.1, λ_sft 0.5, lr 5e-7, linear decay
after 10% warmup, weight decay 0, 16 frames (2,304 video tokens, as the authors' runs), LLM
trained with the CLIP tower and projector frozen, bf16 compute with f32 master weights, remat
per layer and FSDP over every device. The checkpoint folder supplies its tokenizer
(tokenizer.json with `<video>` = 32000); no Llama tokenizer ships with the package, so a run
from the bare preset needs data.tokenizer. Every key is declared in the blocks that
leanpo_jax/train/config.py's SCHEMA lists; a misspelt key is refused.
"""

import ml_collections

from leanpo_jax.train.config import paper_video_config

PRESET = "llava-next-video-7b"


def get_config() -> ml_collections.ConfigDict:
    config = paper_video_config(PRESET)
    config.train.chunk_size = 256
    return config
