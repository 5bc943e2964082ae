"""Qwen2-VL / Qwen2.5-VL: native ViT + merger -> video embeddings spliced into a Qwen2 decoder with M-RoPE.

    video_embeds = model.encode_video(frames)               # [B, F, H, W, 3] normalised -> [B, N, D]
    hidden = model(input_ids, video_embeds, positions=...)  # positions [B, 3, T] (M-RoPE) or [B, T]

The prompt holds N = num_video_tokens(config, F) copies of `video_token_id` between
<|vision_start|> and <|vision_end|>; its M-RoPE position table comes from the host
(positions.py, the data contract's positions_fn). Text continuations (responses, decoding)
pass [B, S] positions, which mean t = h = w. Every other entry point is the LLaVA one
(llava_onevision.model.VideoLLM: placeholder merge, prefix / suffix / packed, KV cache).
"""

from __future__ import annotations

from typing import Optional

import jax
from flax import nnx

from leanpo_jax.models.llava_onevision.model import HFExtra, VideoLLM
from leanpo_jax.models.qwen2 import Qwen2
from leanpo_jax.models.qwen_vl.config import QwenVLConfig, num_video_tokens
from leanpo_jax.models.qwen_vl.vision import QwenVisionTower


class QwenVLModel(VideoLLM):
    """Qwen2-VL / Qwen2.5-VL in Flax NNX (MODEL_PROTOCOL of models/family.py); the merger is
    part of `vision_tower`, so there is no separate connector."""

    def __init__(self, config: QwenVLConfig, *, rngs: nnx.Rngs):  # noqa: D107 - no super(): own parts
        self.config = config
        self.vision_tower = QwenVisionTower(config, rngs=rngs)
        self.connector = None
        # LoRA targets use transformers 5's in-memory module names of the language model.
        self.language_model = Qwen2.from_config(config, rngs=rngs, lora_prefix="model.language_model.")
        self.hf_extra = HFExtra({})

    def encode_video(self, frames: jax.Array) -> jax.Array:
        """Normalised frames [B, F, H, W, 3] -> video embeddings [B, num_video_tokens(F), D]."""
        if frames.ndim != 5:
            raise ValueError(f"frames must be [B, F, H, W, 3], got shape {frames.shape}")
        return self.vision_tower(frames.astype(self.language_model.dtype))

    def num_video_tokens(self, num_frames: Optional[int] = None) -> int:
        return num_video_tokens(self.config, num_frames)
