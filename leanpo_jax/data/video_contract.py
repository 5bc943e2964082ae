"""What every video reader returns: which source frames (sampling), `VideoInfo`, `VideoError`.

Shared by the readers in `video` (frame folders, PyAV) and `video_webp` (imageio), and
re-exported by `video`, the module callers import. Pure numpy.

Contract:
  * A read always returns exactly `num_frames` frames (static F for batching). Uniform
    sampling takes `uniform_indices(n, F)` = LLaVA's `np.linspace(0, n-1, F, dtype=int)`; a
    video with fewer than F frames repeats indices. `sample_indices` adds fps sampling by one
    of `FPS_RULES` (LLaVA-Video's every-k-th frame, Qwen-VL's qwen-vl-utils count), capped at
    and stretched to F.
  * Frame sampling (`data.frame_sampling`, `FRAME_SAMPLING_MODES`): "time" (the default) picks
    frames uniformly in presentation time when a stream's timestamps are not evenly spaced
    (`is_constant_rate`), "index" always picks by frame index. On an evenly spaced stream both
    give the same indices, `uniform_indices`. Why "time" is the default: the reference
    processors (LLaVA-OneVision / LLaVA-Video through decord, Qwen2-VL's qwen-vl-utils through
    decord / torchcodec / torchvision) pick frames by index, linspace over the frame count (an
    fps setting only decides how many), and take a frame's time as index / average fps; that
    is uniform in time only at a constant frame rate, which they assume. "time" keeps their
    frames wherever that assumption holds and keeps its meaning (frames spread evenly over the
    clip, at the times the time instruction states) where it does not; "index" reproduces their
    indices on variable-rate streams too.
  * `VideoInfo` says what was read (source indices in display order, fps, the frames'
    presentation times, the rule used).
  * Bad inputs raise `VideoError(reason, detail, path)` with reason one of MISSING_VIDEO,
    UNREADABLE_VIDEO, NO_FRAMES (the skip reasons of `records`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from leanpo_jax.data.contract import FPS_RULES
from leanpo_jax.data.records import FIX_HINTS


class VideoError(Exception):
    """A video that cannot give frames. `reason` is a `records` skip reason; `detail` says what
    was found; the message names the path and the fix."""

    def __init__(self, reason: str, detail: str, path: str = ""):
        self.reason, self.detail, self.path = reason, detail, path
        super().__init__(f"{reason}: video {path!r}: {detail}. Fix: {FIX_HINTS.get(reason, '')}")


FRAME_SAMPLING_MODES = ("time", "index")
# FPS_RULES (declared in contract, beside FramePolicy), how fps sampling picks frames: "llava"
# (LLaVA-Video: every round(fps / rate)-th frame; over the cap, uniform over the source) or
# "qwen" (qwen-vl-utils' `smart_nframes` count, linspace rounded; over the cap, uniform over
# those frames, as lmms-eval's `max_num_frames` does).
QWEN_MAX_FPS_FRAMES = 768  # qwen-vl-utils' FPS_MAX_FRAMES
# A frame whose time is within this of a target time counts as "at" it: the targets come from
# a float linspace, the frame times from integer pts, and exact ties must not depend on rounding.
_TIE_S = 1e-9


@dataclasses.dataclass
class VideoInfo:
    """What was read. `indices` [F] are source frame indices (display order) of the returned
    frames. `timestamps_s` [F]: their presentation times in seconds from the first frame (the
    stream's pts for files, the frame durations for WebP), or indices / fps where a source has
    no timestamps (frame folders, streams without pts). `fps`: the source's average frame rate
    (FFmpeg's, what decord reports; frames / total duration for WebP; `folder_fps` for frame
    folders). `duration_s`: num_source_frames / fps (LLaVA's convention for its time
    instruction; the stream's length at a constant rate, and for WebP), except on a
    variable-rate PyAV stream (`is_constant_rate` False): there the last frame's time plus one
    mean frame interval, since the average rate FFmpeg derives from an mp4 header need not
    match the pts. `sampled_by`: the rule that chose the indices, "time" or "index" (see
    `sampling_rule`). `repeated` is True when some output frame repeats a source frame (fewer
    source frames than requested, fps sampling in time over a frame shown longer than its
    interval, or a frame the decoder did not output)."""

    num_source_frames: int
    fps: float
    duration_s: float
    indices: np.ndarray
    timestamps_s: np.ndarray
    repeated: bool
    sampled_by: str = "index"

    @property
    def sampled_fps(self) -> float:
        """Frames per second of the returned frames over the clip, F / duration_s: qwen-vl-utils'
        `nframes / total_frames * video_fps`, the rate Qwen2.5-VL's time axis is built from."""
        return len(self.indices) / self.duration_s if self.duration_s > 0 else float(self.fps)


def video_info(n: int, fps: float, indices: np.ndarray, repeated: bool, *, times_s: Optional[np.ndarray] = None,
               frame_sampling: str = "time", duration_s: Optional[float] = None) -> VideoInfo:
    """The `VideoInfo` of a read of `indices` from `n` source frames at `fps`; `times_s` [n]: the
    source frames' presentation times (None: none known), `frame_sampling` the mode the indices
    were sampled with, `duration_s` the source's length where the reader knows it exactly.
    `repeated` also turns True when `indices` repeat."""
    indices = np.asarray(indices, np.int64)
    repeated = bool(repeated or len(np.unique(indices)) < len(indices))
    if times_s is None:
        timestamps = indices / fps
    else:
        times_s = _checked_times(times_s, n)
        timestamps = times_s[indices]
    if duration_s is None:
        variable = times_s is not None and not is_constant_rate(times_s)
        duration_s = times_s[-1] * n / (n - 1) if variable else n / fps
    return VideoInfo(num_source_frames=n, fps=float(fps), duration_s=float(duration_s), indices=indices,
                     timestamps_s=timestamps, repeated=repeated, sampled_by=sampling_rule(frame_sampling, times_s))


def uniform_indices(num_source_frames: int, num_frames: int) -> np.ndarray:
    """LLaVA's uniform sampling: `np.linspace(0, n-1, F, dtype=int)` (truncation, not rounding),
    int64 [F], non-decreasing, first 0 and last n-1. With n < F indices repeat."""
    n, f = int(num_source_frames), int(num_frames)
    if n < 1 or f < 1:
        raise ValueError(f"uniform_indices needs >= 1 source frame and >= 1 output frame; got n={n}, F={f}")
    return np.linspace(0, n - 1, f, dtype=np.int64)


def check_frame_sampling(frame_sampling: str) -> None:
    """Raises ValueError unless `frame_sampling` is one of `FRAME_SAMPLING_MODES`."""
    if frame_sampling not in FRAME_SAMPLING_MODES:
        raise ValueError(f"frame_sampling={frame_sampling!r}: expected one of {FRAME_SAMPLING_MODES}")


def is_constant_rate(times_s: np.ndarray) -> bool:
    """True when every frame's time lies less than half a mean frame interval d from the evenly
    spaced grid t_0 + i*d (d = span / (n-1)). Then frame i is the frame nearest grid time i*d,
    so picking by index already picks uniformly in time (to within one frame): time-base
    rounding (29.97 fps in milliseconds) and small jitter stay constant-rate. Two frames or
    fewer are always constant-rate."""
    times_s = np.asarray(times_s, np.float64)
    n = len(times_s)
    if n <= 2:
        return True
    step = (times_s[-1] - times_s[0]) / (n - 1)
    grid = times_s[0] + np.arange(n) * step
    return bool(np.max(np.abs(times_s - grid)) < step / 2)


def sampling_rule(frame_sampling: str, times_s: Optional[np.ndarray]) -> str:
    """The rule `sample_indices` applies: "time" for `frame_sampling="time"` on a stream with
    known, not evenly spaced times (`is_constant_rate` False), else "index"."""
    check_frame_sampling(frame_sampling)
    by_time = frame_sampling == "time" and times_s is not None and not is_constant_rate(times_s)
    return "time" if by_time else "index"


def time_indices(times_s: np.ndarray, num_frames: int) -> np.ndarray:
    """Uniform sampling in time: F target times `np.linspace(t_first, t_last, F)` (the endpoints
    of index sampling, so the first and last frames are kept) and, for each, the frame on
    screen then, the last one whose time is at or before it. On evenly spaced times this is
    LLaVA's truncation, `uniform_indices`. int64 [F], non-decreasing; with n < F frames repeat."""
    times_s = np.asarray(times_s, np.float64)
    if len(times_s) < 1 or int(num_frames) < 1:
        raise ValueError(f"time_indices needs >= 1 source frame and >= 1 output frame; got n={len(times_s)}, "
                         f"F={num_frames}")
    return _frames_at(times_s, np.linspace(times_s[0], times_s[-1], int(num_frames)))


def _frames_at(times_s: np.ndarray, targets_s: np.ndarray) -> np.ndarray:
    """For each target time, the index of the last frame whose time is at or before it."""
    return np.searchsorted(times_s, targets_s + _TIE_S, side="right").astype(np.int64) - 1


def _checked_times(times_s, n: int) -> np.ndarray:
    times_s = np.asarray(times_s, np.float64)
    if times_s.shape != (n,) or (n > 1 and not np.all(np.diff(times_s) > 0)):
        raise ValueError(f"times_s must be {n} strictly increasing presentation times (display order); "
                         f"got shape {times_s.shape}")
    return times_s


def qwen_fps_count(num_source_frames: int, fps: float, rate: float, min_frames: int) -> int:
    """qwen-vl-utils' `smart_nframes` for an fps request: duration x rate, clamped to
    [min_frames rounded up to even, min(768, n) rounded down to even] and to n, then rounded down
    to even (its FRAME_FACTOR 2); a one-frame source gives 1 (qwen-vl-utils refuses it)."""
    n = int(num_source_frames)
    lo = 2 * -(-int(min_frames) // 2)
    hi = 2 * (min(QWEN_MAX_FPS_FRAMES, n) // 2)
    count = min(max(n / float(fps) * float(rate), lo), hi, n)
    return max(1, 2 * int(count // 2))


def _fps_chosen(n: int, fps: float, rate: float, cap: int, times_s, by_time: bool, rule: str,
                min_frames: int) -> np.ndarray:
    """The k <= cap source indices fps sampling picks (see `sample_indices`)."""
    if rule == "qwen":
        count = qwen_fps_count(n, fps, rate, min_frames)
        # torch.linspace(...).round(): round half to even, here in float64.
        chosen = time_indices(times_s, count) if by_time else np.round(
            np.linspace(0, n - 1, count)).astype(np.int64)
        return chosen[uniform_indices(len(chosen), cap)] if len(chosen) > cap else chosen
    if by_time:
        count = int(np.floor((times_s[-1] - times_s[0]) * rate + _TIE_S)) + 1
        chosen = _frames_at(times_s, times_s[0] + np.arange(count) / rate)
        return time_indices(times_s, cap) if len(chosen) > cap else chosen
    chosen = np.arange(0, n, max(1, int(round(fps / rate))), dtype=np.int64)
    return uniform_indices(n, cap) if len(chosen) > cap else chosen


def sample_indices(num_source_frames: int, num_frames: int, fps: float, *,
                   fps_sampling: Optional[float] = None, max_frames: Optional[int] = None,
                   times_s: Optional[np.ndarray] = None, frame_sampling: str = "time",
                   fps_rule: str = "llava", min_frames: int = 4) -> np.ndarray:
    """The F = `num_frames` source indices `read_video` returns.

    `times_s` [n]: the source frames' presentation times in display order (None: unknown);
    `frame_sampling` "time" | "index" (`FRAME_SAMPLING_MODES`; ValueError otherwise). By index
    (`sampling_rule`: "index" mode, unknown times, or evenly spaced ones):
    without `fps_sampling`, `uniform_indices(n, F)`; with it (LLaVA-Video's rule), every
    `max(1, round(fps / fps_sampling))`-th frame from 0, and if that gives more than the cap
    (`max_frames`, default F) frames, uniform cap frames instead. By time: without
    `fps_sampling`, `time_indices(times_s, F)`; with it, the frames on screen at every
    1 / `fps_sampling` seconds from the first frame (the interval LLaVA-Video's whole-frame step
    approximates), over the cap: `time_indices(times_s, cap)`. `fps_rule="qwen"` instead takes
    `qwen_fps_count` frames (at least `min_frames`) at round(linspace(0, n-1, count)) (by time:
    `time_indices(times_s, count)`), and over the cap keeps cap of those, uniformly (lmms-eval's
    `max_num_frames` sub-sampling of the decoded frames). Either way the k <= cap chosen
    indices are then stretched to F by `chosen[uniform_indices(k, F)]` (repeats spread evenly,
    order kept), so the output shape is static. A cap above F is an error: F is the batch's
    frame count.
    """
    n = int(num_source_frames)
    by_time = sampling_rule(frame_sampling, times_s) == "time"
    if by_time:
        times_s = _checked_times(times_s, n)
    if fps_sampling is None:
        return time_indices(times_s, num_frames) if by_time else uniform_indices(n, num_frames)
    cap = int(num_frames if max_frames is None else max_frames)
    if not 1 <= cap <= num_frames:
        raise ValueError(f"max_frames={max_frames} must be in [1, num_frames={num_frames}]: the output "
                         "always has num_frames frames (static shape); raise num_frames instead")
    if fps_sampling <= 0:
        raise ValueError(f"fps_sampling={fps_sampling} must be > 0 (or None for uniform sampling)")
    if fps_rule not in FPS_RULES:
        raise ValueError(f"fps_rule={fps_rule!r}: expected one of {FPS_RULES}")
    chosen = _fps_chosen(n, fps, float(fps_sampling), cap, times_s, by_time, fps_rule, min_frames)
    return chosen[uniform_indices(len(chosen), num_frames)]
