"""The static geometry of the Qwen-VL vision tower: patchify, 2-D RoPE tables, padded windows.

Token order inside one temporal slice (h x w patches, merge size m = 2) is HF's 2x2 merge-block
order: patch (r, c) sits at s = ((r // m) * (w / m) + c // m) * m² + (r % m) * m + c % m, so the
m² patches of a merge unit are consecutive and the merger views them as one row.

Qwen2.5-VL windows are squares of `u = window_size // spatial_merge_size // patch_size` merge
units per side, tiled from the top-left of each slice; at the right / bottom edge a window may
hold fewer units (ragged). HF permutes tokens into window order and runs varlen attention; here
each window is a padded row of `u² m²` slots (`SliceLayout`), its real tokens first, so a
window's validity is a prefix of length `window_count`: attention key lengths, no mask tensor.
Attention is a set operation and the merger acts on whole merge units, so gathering q/k/v into
padded windows and gathering the result back (`window_inverse`) equals HF's permute -> window
attention -> un-permute.
Everything here is numpy on the host (shapes fixed per run) except `patchify`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from leanpo_jax.models.qwen_vl.config import QwenVisionConfig

VISION_ROPE_THETA = 10000.0  # HF's vision rope_parameters default ("axial", θ 1e4); no checkpoint changes it


def patchify(frames: jax.Array, v: QwenVisionConfig) -> jax.Array:
    """[B, F, H, W, C] frames -> rows [B, t*h*w, C*tp*p*p] as HF's video processor flattens them:
    an odd F repeats the last frame, t outermost, merge-block order, each row (C, tp, p, p)."""
    b, f, hh, ww, c = frames.shape
    tp, p, m = v.temporal_patch_size, v.patch_size, v.spatial_merge_size
    if f % tp:
        frames = jnp.concatenate([frames, jnp.repeat(frames[:, -1:], tp - f % tp, axis=1)], axis=1)
    t, gh, gw = frames.shape[1] // tp, hh // p, ww // p
    x = frames.reshape(b, t, tp, gh // m, m, p, gw // m, m, p, c)
    # (B, t, tp, bh, i, ph, bw, j, pw, C) -> (B, t, bh, bw, i, j | C, tp, ph, pw)
    x = x.transpose(0, 1, 3, 6, 4, 7, 9, 2, 5, 8)
    return x.reshape(b, t * gh * gw, c * tp * p * p)


@dataclasses.dataclass(frozen=True)
class SliceLayout:
    """One temporal slice of `h x w` patches (same for every slice and every video of a run).

    positions       [S, 2] int32    (row, col) patch coordinates of token s (RoPE inputs)
    window_index    [nW, Wmax] int32 token in each padded window slot (0 on padding)
    window_count    [nW] int32      real tokens of each window: slots [0, count) are valid
    window_inverse  [S] int32       flat padded slot w * Wmax + j holding token s
    """

    grid_hw: Tuple[int, int]
    positions: np.ndarray
    window_index: np.ndarray
    window_count: np.ndarray
    window_inverse: np.ndarray

    @property
    def ragged(self) -> bool:
        """Whether some window has padding slots (then attention needs a key mask)."""
        return bool((self.window_count < self.window_index.shape[1]).any())

    def window_lengths(self, rows: int) -> np.ndarray:
        """[rows * nW] int32 key lengths of the padded windows of `rows` slices: every query of
        window w sees its valid keys only (padding queries too, so no row is empty; their
        outputs are never gathered back)."""
        return np.tile(self.window_count, rows).astype(np.int32)


def window_units(v: QwenVisionConfig) -> int:
    """Merge units per window side (HF's vit_merger_window_size); raises if below 1."""
    u = v.window_size // v.spatial_merge_size // v.patch_size
    if u < 1:
        raise ValueError(f"vision.window_size={v.window_size} is smaller than one merge unit "
                         f"({v.spatial_merge_size * v.patch_size} px); use a multiple of it")
    return u


@functools.lru_cache(maxsize=32)
def _layout(gh: int, gw: int, m: int, u: int) -> SliceLayout:
    mh, mw = gh // m, gw // m
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    blocks = (mh, m, mw, m)
    positions = np.stack([a.reshape(blocks).transpose(0, 2, 1, 3).reshape(-1) for a in (rows, cols)], -1)
    nwh, nww = -(-mh // u), -(-mw // u)
    wmax, unit = u * u * m * m, m * m
    index = np.zeros((nwh * nww, wmax), np.int32)
    count = np.zeros(nwh * nww, np.int32)
    inverse = np.zeros(gh * gw, np.int32)
    for bh in range(mh):  # merge units in row-major order: each window fills its slots in order
        for bw in range(mw):
            w, first = (bh // u) * nww + bw // u, (bh * mw + bw) * unit
            slots = count[w] + np.arange(unit)
            index[w, slots] = first + np.arange(unit)
            inverse[first:first + unit] = w * wmax + slots
            count[w] += unit
    for a in (positions, index, count, inverse):
        a.setflags(write=False)  # cached and shared: never modified in place
    return SliceLayout((gh, gw), positions.astype(np.int32), index, count, inverse)


def slice_layout(v: QwenVisionConfig, height: int, width: int) -> SliceLayout:
    """The layout of a slice of `height x width` pixels (multiples of patch * merge size)."""
    step = v.patch_size * v.spatial_merge_size
    if height % step or width % step:
        raise ValueError(f"frames of {height}x{width} px: height and width must be multiples of "
                         f"patch_size * spatial_merge_size = {step}")
    u = window_units(v) if v.version == "2.5" else max(height, width) // step  # 2: one window
    return _layout(height // v.patch_size, width // v.patch_size, v.spatial_merge_size, u)


def rope_tables(v: QwenVisionConfig, layout: SliceLayout) -> Tuple[np.ndarray, np.ndarray]:
    """cos, sin [S, hd] float32 of the 2-D vision RoPE: angles [row·ω ‖ col·ω] duplicated,
    ω_j = θ^(-2j / (hd/2)) for j < hd/4 (HF's axial rope), for rotate-half application."""
    half = v.head_dim // 2
    inv_freq = 1.0 / (VISION_ROPE_THETA ** (np.arange(0, half, 2, dtype=np.float64) / half))
    pos = layout.positions.astype(np.float64)
    angles = np.concatenate([pos[:, :1] * inv_freq, pos[:, 1:] * inv_freq], axis=-1)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_vision_rope(x: jax.Array, cos: np.ndarray, sin: np.ndarray) -> jax.Array:
    """x [N, S, H, hd] -> x·cos + rotate_half(x)·sin in float32, returned in x's dtype."""
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x32 * cos[None, :, None] + rotated * sin[None, :, None]).astype(x.dtype)
