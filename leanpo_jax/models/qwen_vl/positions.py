"""Host-side M-RoPE position table of a Qwen2-VL / Qwen2.5-VL prompt (numpy only, no jax).

The rule of transformers 4.x / vLLM `get_rope_index` for videos, per prompt, with m the largest
position given so far (m = -1 before the first token):
- a text token (vision_start / vision_end included) gets t = h = w = m + 1;
- a video block, a run of N = t_g * h_g * w_g video_pad ids (the LLM grid of `video_grid`
  after the 2x2 merge: t_g = ceil(F / 2), h_g = H / 28, w_g = W / 28, in (t, row, col) order)
  starts at s = m + 1 and its token k = (i, r, c) gets
      t = s + floor(i * interval),  h = s + r,  w = s + c,
  interval = 1 for Qwen2-VL, tokens_per_second * second_per_grid_t for Qwen2.5-VL;
- so text after a block resumes at max(all positions so far) + 1, and decoding continues from
  `next_position(table)` = that maximum + 1 on all three axes.
transformers >= 5.3 resumes after a block at s + max(h_g, w_g) instead (ignoring the time axis),
and 4.x Qwen2.5-VL truncates second_per_grid_t to an integer before multiplying; this module
follows 4.x's resume rule with vLLM's float interval (floor of the product).
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from leanpo_jax.models.qwen_vl.config import QwenVLConfig, num_video_tokens, video_grid


def time_interval(config: QwenVLConfig, second_per_grid_t: Optional[float] = None) -> float:
    """Time-axis step per temporal patch: 1 (Qwen2-VL), tokens_per_second * second_per_grid_t
    (Qwen2.5-VL; second_per_grid_t defaults to the config's)."""
    if config.vision.version == "2":
        return 1.0
    sec = config.second_per_grid_t if second_per_grid_t is None else float(second_per_grid_t)
    return float(config.tokens_per_second) * sec


def video_block(config: QwenVLConfig, start: int, *, second_per_grid_t: Optional[float] = None,
                temporal: Optional[int] = None, size=None) -> np.ndarray:
    """int64 [3, N]: the (t, h, w) positions of one video's N tokens starting at `start`;
    `temporal`: its temporal patches (default: the config's num_frames / 2, rounded up); `size`:
    its frames' (H, W) (default config.video_size)."""
    t, h, w = video_grid(config, None, size)
    t = t if temporal is None else int(temporal)
    m = config.vision.spatial_merge_size
    # The temporal patches are not merged further (temporal merge 1); space is merged m x m.
    gt, gh, gw = t, h // m, w // m
    # floor of a non-negative float product, as torch's .long(); computed in float64.
    times = np.floor(np.arange(gt, dtype=np.float64) * time_interval(config, second_per_grid_t))
    tt, hh, ww = np.meshgrid(times.astype(np.int64), np.arange(gh), np.arange(gw), indexing="ij")
    return start + np.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)])


def rope_positions(prompt_ids, config: QwenVLConfig, *, second_per_grid_t: Optional[float] = None,
                   size=None) -> np.ndarray:
    """prompt_ids [P] -> int32 [3, P] (t, h, w) M-RoPE positions (module docstring rule).

    Every maximal run of `video_token_id` ids is one video of run / (H/28 · W/28) temporal
    patches, (H, W) = `size` (default config.video_size; a run that is no whole number of them
    is a ValueError); image placeholders are refused (this family feeds videos only).
    """
    ids = np.asarray(prompt_ids).reshape(-1)
    if np.any(ids == config.image_token_id):
        raise ValueError(f"prompt holds image placeholder ids ({config.image_token_id}); "
                         "Qwen-VL prompts here carry videos only")
    # A run's length gives its temporal patches (the run's frame count is the data side's).
    per_slice = num_video_tokens(config, config.vision.temporal_patch_size, size)
    out = np.empty((3, ids.shape[0]), np.int64)
    is_pad = ids == config.video_token_id
    nxt, i = 0, 0  # nxt = max(positions so far) + 1
    while i < ids.shape[0]:
        if not is_pad[i]:
            out[:, i] = nxt
            nxt, i = nxt + 1, i + 1
            continue
        run = int(np.argmin(is_pad[i:])) if not is_pad[i:].all() else ids.shape[0] - i
        if run % per_slice:
            raise ValueError(f"a run of {run} video placeholder ids ({config.video_token_id}) at "
                             f"index {i} is not a whole number of temporal patches: each is {per_slice} "
                             f"tokens at video size {tuple(config.video_size if size is None else size)} "
                             "(2x2 merge)")
        block = video_block(config, nxt, second_per_grid_t=second_per_grid_t, temporal=run // per_slice, size=size)
        out[:, i:i + run] = block
        nxt, i = int(block.max()) + 1, i + run
    return out.astype(np.int32)


def next_position(table) -> int:
    """Where decoding (or a response) continues after a prompt table [3, P]: max + 1 (0 if empty)."""
    table = np.asarray(table)
    return int(table.max()) + 1 if table.size else 0


def seconds_per_temporal_patch(config: QwenVLConfig, sampled_fps: Optional[float]) -> Optional[float]:
    """Seconds one temporal patch spans: temporal_patch_size / the video's sampled fps (what
    qwen-vl-utils hands the processor as `fps`); None without a known rate (the config's)."""
    if sampled_fps is None:
        return None
    if not sampled_fps > 0:
        raise ValueError(f"sampled_fps={sampled_fps!r}: a video's sampled frame rate must be > 0")
    return config.vision.temporal_patch_size / float(sampled_fps)


def _positions(config: QwenVLConfig, fixed_second_per_grid_t: Optional[float], prompt_ids,
               sampled_fps: Optional[float] = None, *, size=None) -> np.ndarray:
    sec = seconds_per_temporal_patch(config, sampled_fps)
    return rope_positions(prompt_ids, config, second_per_grid_t=fixed_second_per_grid_t if sec is None else sec,
                          size=size)


def positions_fn(config: QwenVLConfig, *, second_per_grid_t: Optional[float] = None):
    """The data contract's `positions_fn`: a picklable (prompt_ids [P], sampled_fps=None, *,
    size=None) -> int32 [3, P] (a partial of a module-level function, so grain workers can carry it). A
    record's `sampled_fps` (VideoInfo.sampled_fps) sets its Qwen2.5-VL time step; without it,
    `second_per_grid_t` (default: the config's, 1.0 s = 2 frames sampled at 2 fps)."""
    return functools.partial(_positions, config, second_per_grid_t)
