"""The Video-LLM: SigLIP tower -> projector -> per-frame pooling -> newlines, spliced into Qwen2.

    video_embeds = model.encode_video(frames)                 # [B, F, H, W, 3] normalised -> [B, N, D]
    hidden = model(input_ids, video_embeds=video_embeds)      # [B, T, D] final-norm hidden states
    logits = hidden @ model.lm_head_kernel()                  # [D, V]
    hidden_p, kv = model.prefix(prompt_ids, video_embeds=..., prompt_mask=...)
    hidden_s = model.suffix(token_ids, positions=..., kv_prefix=kv, kv_mask=...)

The prompt holds exactly N = num_video_tokens(config, F) copies of `config.video_token_index`
(inserted as ids on the host); the i-th placeholder of a row takes the row's i-th video
embedding. Shapes stay static: the merge is a cumulative-count gather, not a scatter.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax.models.attention import KV, KVCache
from leanpo_jax.models.config import VideoLLMConfig, get_preset, num_video_tokens
from leanpo_jax.models.connector import VideoConnector
from leanpo_jax.models.qwen2 import Qwen2
from leanpo_jax.models.siglip import SiglipVisionTower


class HFExtra(nnx.Variable):
    """Checkpoint tensors the forward pass does not use (kept so that save_hf round-trips)."""


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_video_placeholders(input_ids, video_token_index: int, num_video_tokens_: int) -> None:
    """Host-side check that every row holds exactly `num_video_tokens_` placeholder ids."""
    counts = np.sum(np.asarray(input_ids) == video_token_index, axis=-1).reshape(-1)
    bad = np.nonzero(counts != num_video_tokens_)[0]
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"row {row} of input_ids holds {int(counts[row])} video placeholder ids "
            f"({video_token_index}) but the video embeddings have {num_video_tokens_} tokens; "
            "insert exactly num_video_tokens(config, num_frames) placeholder ids per video."
        )


def merge_video_embeds(
    text_embeds: jax.Array, input_ids: jax.Array, video_embeds: jax.Array, video_token_index: int
) -> jax.Array:
    """Replaces the placeholder rows of text_embeds [B, T, D] by video_embeds [B, N, D] in order."""
    is_video = input_ids == video_token_index
    order = jnp.clip(jnp.cumsum(is_video, axis=-1) - 1, 0, video_embeds.shape[1] - 1)
    gathered = jnp.take_along_axis(video_embeds.astype(text_embeds.dtype), order[..., None], axis=1)
    return jnp.where(is_video[..., None], gathered, text_embeds)


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
        self.language_model = Qwen2.from_config(config, rngs=rngs)
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
        if _is_concrete(input_ids):
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

    def packed(self, prompt_ids, video_embeds, token_ids, positions, kv_mask=None, mask=None):
        """`prefix` + `suffix` in one pass (Qwen2.packed) -> (hidden_prompt [Bp, P, D],
        hidden_tokens [B2, S, D]); token rows grouped g per prompt row, as in `suffix`."""
        lm = self.language_model
        return lm.packed(self.embed(prompt_ids, video_embeds), lm.embed(token_ids), positions, kv_mask, mask)

    # ---------------------------------------------------------------------------- decoding
    def prefill(self, prompt_ids, video_embeds=None, prompt_mask=None, *, max_len: int):
        """`prefix` into a fixed-size KV cache of max_len slots -> (hidden, cache)."""
        embeds = self.embed(prompt_ids, video_embeds)
        return self.language_model.prefill(embeds, None, prompt_mask, max_len=max_len)

    def decode_step(self, token_ids, cache: KVCache):
        """One step (usually one token per row) over the cache -> (hidden [B, S, D], cache)."""
        return self.language_model.decode_step(self.language_model.embed(token_ids), cache)

    def num_video_tokens(self, num_frames: Optional[int] = None) -> int:
        return num_video_tokens(self.config, num_frames)


def build_model(config, *, seed: int = 0) -> VideoLLM:
    """Seeded random init of a preset name or a VideoLLMConfig."""
    if isinstance(config, str):
        config = get_preset(config)
    return VideoLLM(config, rngs=nnx.Rngs(seed))


def abstract_model(config: VideoLLMConfig) -> VideoLLM:
    """The model with shape/dtype placeholders instead of arrays (no init pass), for streaming."""
    return nnx.eval_shape(lambda: VideoLLM(config, rngs=nnx.Rngs(0)))
