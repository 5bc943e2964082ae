"""LLaVA-NeXT-Video: CLIP tower -> pooling/projector -> video embeddings spliced into a Llama decoder.

    video_embeds = model.encode_video(frames)                 # [B, F, H, W, 3] normalised -> [B, N, D]
    hidden = model(input_ids, video_embeds=video_embeds)      # [B, T, D] final-norm hidden states

The decoder is the shared Qwen2/Llama one (models/qwen2.py: no biases, MHA, linear RoPE x2);
the prompt holds exactly N = num_video_tokens(config, F) copies of `config.video_token_index`.
Every entry point (prefix / suffix / packed / prefill / decode_step, the placeholder merge) is
the LLaVA one of `llava_onevision.model.VideoLLM`; only the tower and the connector differ.
"""

from __future__ import annotations

from typing import Optional

from flax import nnx

from leanpo_jax.models.llava_next_video.clip import ClipVisionTower
from leanpo_jax.models.llava_next_video.config import NextVideoConfig, num_video_tokens
from leanpo_jax.models.llava_next_video.connector import NextVideoConnector
from leanpo_jax.models.llava_onevision.model import HFExtra, VideoLLM
from leanpo_jax.models.qwen2 import Qwen2


class NextVideoLLM(VideoLLM):
    """LLaVA-NeXT-Video in Flax NNX (MODEL_PROTOCOL of models/family.py)."""

    def __init__(self, config: NextVideoConfig, *, rngs: nnx.Rngs):  # noqa: D107 - no super(): own parts
        self.config = config
        self.vision_tower = ClipVisionTower(config, rngs=rngs)
        self.connector = NextVideoConnector(config, rngs=rngs)
        # LoRA targets use transformers 5's in-memory module names of the language model.
        self.language_model = Qwen2.from_config(config, rngs=rngs, lora_prefix="model.language_model.")
        self.hf_extra = HFExtra({})

    def num_video_tokens(self, num_frames: Optional[int] = None) -> int:
        return num_video_tokens(self.config, num_frames)
