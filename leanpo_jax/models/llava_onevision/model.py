"""LLaVA-OneVision / LLaVA-Video: SigLIP tower -> projector -> pooling -> newlines, spliced into Qwen2.

    video_embeds = model.encode_video(frames)                 # [B, F, H, W, 3] normalised -> [B, N, D]
    hidden = model(input_ids, video_embeds=video_embeds)      # [B, T, D] final-norm hidden states
    logits = hidden @ model.lm_head_kernel()                  # [D, V]
    hidden_p, kv = model.prefix(prompt_ids, video_embeds=..., prompt_mask=...)
    hidden_s = model.suffix(token_ids, positions=..., kv_prefix=kv, kv_mask=...)

The prompt holds exactly N = num_video_tokens(config, F) copies of `config.video_token_index`
(inserted as ids on the host), merged by `models.merge`.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from leanpo_jax.models.attention import KV, KVCache
from leanpo_jax.models.llava_onevision.config import VideoLLMConfig, num_video_tokens
from leanpo_jax.models.llava_onevision.connector import VideoConnector
from leanpo_jax.models.llava_onevision.siglip import SiglipVisionTower
from leanpo_jax.models.merge import check_video_placeholders, is_concrete, merge_video_embeds
from leanpo_jax.models.qwen2 import Qwen2


class HFExtra(nnx.Variable):
    """Checkpoint tensors the forward pass does not use (kept so that save_hf round-trips)."""


class VideoLLM(nnx.Module):
    """LLaVA-OneVision / LLaVA-Video in Flax NNX (text-only when `config.vision` is None)."""

    def __init__(self, config: VideoLLMConfig, *, rngs: nnx.Rngs):
        self.config = config
        if config.vision is not None:
            self.vision_tower = SiglipVisionTower(config, rngs=rngs)
            self.connector = VideoConnector(config, rngs=rngs)
        else:
            self.vision_tower = None
            self.connector = None
        # LoRA targets use transformers 5's in-memory module names of the language model.
        self.language_model = Qwen2.from_config(config, rngs=rngs, lora_prefix="model." if config.vision is None else "model.language_model.")
        self.hf_extra = HFExtra({})

    # ------------------------------------------------------------------------------ pieces
    def encode_video(self, frames: jax.Array) -> jax.Array:
        """Normalised frames [B, F, H, W, 3] -> video embeddings [B, num_video_tokens(F), D]."""
        if self.vision_tower is None:
            raise ValueError("this model has no vision tower (text-only checkpoint or config)")
        if frames.ndim != 5:
            raise ValueError(f"frames must be [B, F, H, W, 3], got shape {frames.shape}")
        features = self.vision_tower(frames.astype(self.language_model.dtype))
        return self.connector(features)

    def embed(self, input_ids: jax.Array, video_embeds: Optional[jax.Array] = None) -> jax.Array:
        """Token embeddings [B, T, D] with the video spliced in at the placeholder ids."""
        index = self.config.video_token_index
        # The placeholder id may lie outside the embedding table (e.g. −200 conventions).
        safe_ids = jnp.where(input_ids == index, 0, input_ids)
        embeds = self.language_model.embed(safe_ids)
        if video_embeds is None:
            return embeds
        if is_concrete(input_ids):
            check_video_placeholders(input_ids, index, video_embeds.shape[1])
        return merge_video_embeds(embeds, input_ids, video_embeds, index)

    def lm_head_kernel(self) -> jax.Array:
        """[D, V]: logits = hidden @ lm_head_kernel() (tied: the embedding's transpose)."""
        return self.language_model.lm_head_kernel()

    # ------------------------------------------------------------------------ entry points
    def __call__(self, input_ids, video_embeds=None, *, positions=None, mask=None) -> jax.Array:
        """Full causal forward -> final-norm hidden states [B, T, D] (no logits)."""
        return self.language_model(self.embed(input_ids, video_embeds), positions, mask)

    def prefix(self, prompt_ids, video_embeds=None, prompt_mask=None, positions=None):
        """The prompt once -> (hidden [B, P, D], KV of every layer [L, B, P, K, hd])."""
        return self.language_model.prefix(self.embed(prompt_ids, video_embeds), positions, prompt_mask)

    def suffix(self, token_ids, positions, kv_prefix: KV, kv_mask=None, mask=None) -> jax.Array:
        """Tokens [B2, S] over [valid prefix K/V ‖ own tokens causally] -> hidden [B2, S, D].

        B2 = g·Bp with rows grouped (row r uses prefix row r // g); differentiable through
        kv_prefix. `positions` continue each row's true prompt length.
        """
        embeds = self.language_model.embed(token_ids)
        return self.language_model.suffix(embeds, positions, kv_prefix, kv_mask, mask)

    def packed(self, prompt_ids, video_embeds, token_ids, positions, kv_mask=None, mask=None,
               prompt_positions=None):
        """`prefix` + `suffix` in one pass (Qwen2.packed) -> (hidden_prompt [Bp, P, D],
        hidden_tokens [B2, S, D]); token rows grouped g per prompt row, as in `suffix`;
        prompt_positions [Bp, P] (None: 0..P-1)."""
        lm = self.language_model
        return lm.packed(self.embed(prompt_ids, video_embeds), lm.embed(token_ids), positions, kv_mask, mask,
                         prompt_positions)

    # ---------------------------------------------------------------------------- decoding
    def prefill(self, prompt_ids, video_embeds=None, prompt_mask=None, *, max_len: int, positions=None):
        """`prefix` into a fixed-size KV cache of max_len slots -> (hidden, cache); positions
        [B, P] (None: 0..P-1), decoding continues after each row's last valid position."""
        embeds = self.embed(prompt_ids, video_embeds)
        return self.language_model.prefill(embeds, positions, prompt_mask, max_len=max_len)

    def decode_step(self, token_ids, cache: KVCache):
        """One step (usually one token per row) over the cache -> (hidden [B, S, D], cache)."""
        return self.language_model.decode_step(self.language_model.embed(token_ids), cache)

    def num_video_tokens(self, num_frames: Optional[int] = None) -> int:
        return num_video_tokens(self.config, num_frames)
