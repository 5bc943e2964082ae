"""Per-frame 2-D pooling of square token grids and newline-token layouts (LLaVA-style connectors).

Pooling of one frame's g x g grid (`pool_frames`, stride 2):
  bilinear: resize to ceil(g/2) per side, half-pixel centres, no antialias
            (== torch F.interpolate(mode="bilinear", align_corners=False)); 27 -> 14.
  average:  2x2 mean, floor (== torch avg_pool2d(2)); 24 -> 12, 27 -> 13.
  max:      2x2 max, floor (== torch max_pool2d(2)).
  none:     keep g x g.
Newlines (`insert_newlines`), tokens row-major within a frame, frames in time order:
  grid: after every row of every frame (F*s*(s+1)); frame: after each frame (F*(s*s+1));
  one_token: one after the whole video (F*s*s+1); no_token: none (F*s*s).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

POOL_MODES = ("bilinear", "average", "max", "none")
NEWLINE_LAYOUTS = ("grid", "one_token", "frame", "no_token")


def pooled_side(grid: int, mode: str) -> int:
    """Tokens per side of a pooled g x g frame (see the module docstring)."""
    if mode == "bilinear":
        return math.ceil(grid / 2)
    if mode in ("average", "max"):
        return grid // 2
    return grid


def tokens_with_newlines(frames: int, side: int, layout: str) -> int:
    """Tokens of `frames` pooled frames of side x side with newline `layout`."""
    per_frame = side * side
    if layout == "grid":
        return frames * side * (side + 1)
    if layout == "frame":
        return frames * (per_frame + 1)
    if layout == "one_token":
        return frames * per_frame + 1
    return frames * per_frame


def pool_frames(x: jax.Array, mode: str) -> jax.Array:
    """Per-frame 2-D pooling of square token grids: [..., g*g, D] -> [..., s*s, D].

    s = ceil(g/2) (bilinear), floor(g/2) (average, max) or g (none). Computed in float32.
    """
    *lead, n, d = x.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"{n} tokens per frame is not a square grid")
    if mode == "none":
        return x
    frames = x.reshape((-1, g, g, d)).astype(jnp.float32)
    if mode == "bilinear":
        s = math.ceil(g / 2)
        # antialias=False: the default antialias=True blurs on downsampling and differs from
        # torch; jax's half-pixel sample positions match align_corners=False.
        out = jax.image.resize(frames, (frames.shape[0], s, s, d), method="bilinear",
                               antialias=False)
    elif mode in ("average", "max"):
        s = g // 2
        blocks = frames[:, : 2 * s, : 2 * s].reshape(-1, s, 2, s, 2, d)
        out = blocks.mean(axis=(2, 4)) if mode == "average" else blocks.max(axis=(2, 4))
    else:
        raise ValueError(f"unknown pool mode {mode!r}")
    return out.reshape(tuple(lead) + (s * s, d)).astype(x.dtype)


def insert_newlines(x: jax.Array, newline: jax.Array, layout: str) -> jax.Array:
    """Flattens per-frame grids x [B, F, s*s, D] into [B, N, D], adding `newline` [D] per layout."""
    b, f, n, d = x.shape
    s = math.isqrt(n)
    nl = newline.astype(x.dtype)
    if layout == "grid":
        rows = x.reshape(b, f, s, s, d)
        rows = jnp.concatenate([rows, jnp.broadcast_to(nl, (b, f, s, 1, d))], axis=3)
        return rows.reshape(b, f * s * (s + 1), d)
    if layout == "frame":
        x = jnp.concatenate([x, jnp.broadcast_to(nl, (b, f, 1, d))], axis=2)
        return x.reshape(b, f * (n + 1), d)
    flat = x.reshape(b, f * n, d)
    if layout == "one_token":
        return jnp.concatenate([flat, jnp.broadcast_to(nl, (b, 1, d))], axis=1)
    if layout == "no_token":
        return flat
    raise ValueError(f"unknown newline layout {layout!r}")
