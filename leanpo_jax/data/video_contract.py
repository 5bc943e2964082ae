"""What every video reader returns: which source frames (sampling), `VideoInfo`, `VideoError`.

Shared by the readers in `video` (frame folders, PyAV) and `video_webp` (imageio), and
re-exported by `video`, the module callers import. Pure numpy.

Contract:
  * A read always returns exactly `num_frames` frames (static F for batching). Uniform
    sampling takes `uniform_indices(n, F)` = LLaVA's `np.linspace(0, n-1, F, dtype=int)`; a
    video with fewer than F frames repeats indices. `sample_indices` adds LLaVA-Video's fps
    sampling, stretched to F.
  * `VideoInfo` says what was read (source indices in display order, fps, LLaVA's timestamps).
  * Bad inputs raise `VideoError(reason, detail, path)` with reason one of MISSING_VIDEO,
    UNREADABLE_VIDEO, NO_FRAMES (the skip reasons of `records`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from leanpo_jax.data.records import FIX_HINTS


class VideoError(Exception):
    """A video that cannot give frames. `reason` is a `records` skip reason; `detail` says what
    was found; the message names the path and the fix."""

    def __init__(self, reason: str, detail: str, path: str = ""):
        self.reason, self.detail, self.path = reason, detail, path
        super().__init__(f"{reason}: video {path!r}: {detail}. Fix: {FIX_HINTS.get(reason, '')}")


@dataclasses.dataclass
class VideoInfo:
    """What was read. `indices` [F] are source frame indices (display order) of the returned
    frames; `timestamps_s` [F] = indices / fps and `duration_s` = num_source_frames / fps (LLaVA's
    convention for its time instruction); `repeated` is True when some output frame repeats a
    source frame (fewer source frames than requested, or a frame the decoder did not output)."""

    num_source_frames: int
    fps: float
    duration_s: float
    indices: np.ndarray
    timestamps_s: np.ndarray
    repeated: bool


def video_info(n: int, fps: float, indices: np.ndarray, repeated: bool) -> VideoInfo:
    """The `VideoInfo` of a read of `indices` from `n` source frames at `fps`; `repeated` also
    turns True when `indices` repeat."""
    indices = np.asarray(indices, np.int64)
    repeated = bool(repeated or len(np.unique(indices)) < len(indices))
    return VideoInfo(num_source_frames=n, fps=float(fps), duration_s=n / fps, indices=indices,
                     timestamps_s=indices / fps, repeated=repeated)


def uniform_indices(num_source_frames: int, num_frames: int) -> np.ndarray:
    """LLaVA's uniform sampling: `np.linspace(0, n-1, F, dtype=int)` (truncation, not rounding),
    int64 [F], non-decreasing, first 0 and last n-1. With n < F indices repeat."""
    n, f = int(num_source_frames), int(num_frames)
    if n < 1 or f < 1:
        raise ValueError(f"uniform_indices needs >= 1 source frame and >= 1 output frame; got n={n}, F={f}")
    return np.linspace(0, n - 1, f, dtype=np.int64)


def sample_indices(num_source_frames: int, num_frames: int, fps: float, *,
                   fps_sampling: Optional[float] = None, max_frames: Optional[int] = None) -> np.ndarray:
    """The F = `num_frames` source indices `read_video` returns.

    Without `fps_sampling`: `uniform_indices(n, F)`. With it (LLaVA-Video's rule): every
    `max(1, round(fps / fps_sampling))`-th frame from 0; if that gives more than the cap
    (`max_frames`, default F) frames, uniform cap frames instead. The k <= cap chosen indices are
    then stretched to F by `chosen[uniform_indices(k, F)]` (repeats spread evenly, order kept),
    so the output shape is static. A cap above F is an error: F is the batch's frame count.
    """
    if fps_sampling is None:
        return uniform_indices(num_source_frames, num_frames)
    cap = int(num_frames if max_frames is None else max_frames)
    if not 1 <= cap <= num_frames:
        raise ValueError(f"max_frames={max_frames} must be in [1, num_frames={num_frames}]: the output "
                         "always has num_frames frames (static shape); raise num_frames instead")
    if fps_sampling <= 0:
        raise ValueError(f"fps_sampling={fps_sampling} must be > 0 (or None for uniform sampling)")
    step = max(1, int(round(fps / fps_sampling)))
    chosen = np.arange(0, int(num_source_frames), step, dtype=np.int64)
    if len(chosen) > cap:
        chosen = uniform_indices(num_source_frames, cap)
    return chosen[uniform_indices(len(chosen), num_frames)]
