"""Splicing video embeddings into text embeddings at the placeholder ids (every family).

The prompt holds exactly N copies of the model's video placeholder id (inserted as ids on the
host); the i-th placeholder of a row takes the row's i-th video embedding. Shapes stay
static: the merge is a cumulative-count gather, not a scatter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
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
