"""The WebP reader (still and animated) for `video.read_video`: imageio.v3's pillow plugin.

Contract:
  * A WebP is found by its RIFF....WEBP signature (`is_webp`), not its extension.
  * `read_webp` returns what `read_video` returns (uint8 [F, H, W, 3] frames resized by
    `frames.fit_frame`, and a `VideoInfo`), or None when this Pillow was built without WebP:
    `read_video` then falls back to PyAV (which reads still WebP only). A WebP that Pillow
    opens but cannot decode is `VideoError(UNREADABLE_VIDEO)`.
  * fps = frames / total duration (an average rate, like FFmpeg's); a WebP without durations
    (a still image) uses `folder_fps`. Frame i's presentation time is the sum of the durations
    before it: uneven durations are a variable frame rate, sampled by time under
    `frame_sampling="time"` (`video_contract.sampling_rule`), and `VideoInfo.timestamps_s`
    reports those times.

Why imageio here (libwebp through Pillow, the reference decoder, which composites animation
frames): FFmpeg's webp decoder has no animation support (PyAV 18.1 / libavcodec 62 fails on an
animated WebP with InvalidDataError), and imageio gives frame count (`properties`), per-frame
durations (`metadata`) and RGB frames (`read(index=, mode=)`) through one API. imageio is
imported on first use, not at import (the train step imports `video` for `normalize_frames`
and must not load data readers).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from leanpo_jax.data.frames import ResizeTarget, fit_frame
from leanpo_jax.data.records import UNREADABLE_VIDEO
from leanpo_jax.data.video_contract import VideoError, sample_indices, uniform_indices, video_info


def is_webp(path: str) -> bool:
    """True when the file starts with the WebP signature (RIFF, 4 size bytes, WEBP). A file
    that cannot be opened is not (PyAV then reports why: UNREADABLE_VIDEO)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def read_webp(path, num_frames, target: ResizeTarget, sampling: dict, folder_fps):
    """A WebP (still or animated) through imageio.v3's pillow plugin, or None when this Pillow
    cannot open WebP (the caller then tries PyAV, which reads still WebP). `sampling`: the
    `sample_indices` keywords (fps_sampling, max_frames, frame_sampling).

    One pass in display order reads each frame (Pillow sets a WebP frame's duration only once
    it is decoded, and animation frames decode sequentially anyway) and keeps the frames that
    index sampling would want, resized. The indices depend on the durations (fps sampling, and
    time sampling of uneven durations), known after that pass; wanted frames it did not keep
    are then read again.
    """
    iio = _iio()
    try:
        file = iio.imopen(path, "r", plugin="pillow")
    except OSError:
        return None
    try:
        with file:
            n = int(file.properties(index=...).n_images or 1)
            # Most WebPs have even durations (or none): these are their indices, read in the pass.
            likely = set() if sampling["fps_sampling"] is not None else set(uniform_indices(n, num_frames).tolist())
            got, durations = {}, []
            for i in range(n):
                rgb = file.read(index=i, mode="RGB")
                durations.append(file.metadata(index=i).get("duration"))
                if i in likely:
                    got[i] = fit_frame(rgb, target)
            timed = all(durations)  # None or 0 for a frame: no timing
            total_ms = float(sum(durations)) if timed else 0.0
            fps = n * 1000.0 / total_ms if total_ms > 0 else float(folder_fps)
            times_s = np.concatenate([[0.0], np.cumsum(durations[:-1], dtype=np.float64)]) / 1000 if timed else None
            indices = sample_indices(n, num_frames, fps, times_s=times_s, **sampling)
            for i in sorted({int(j) for j in indices} - set(got)):
                got[i] = fit_frame(file.read(index=i, mode="RGB"), target)
    except (OSError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise VideoError(UNREADABLE_VIDEO, f"cannot decode the WebP: {type(e).__name__}: {e}", path) from e
    frames = np.stack([got[int(i)] for i in indices])
    # The durations sum to the length exactly (n / fps is that sum, or n / folder_fps untimed).
    return frames, video_info(n, fps, indices, False, times_s=times_s, frame_sampling=sampling["frame_sampling"],
                              duration_s=n / fps)


def _iio():
    # imageio.v3 on first WebP read, not at import (as PyAV in `video`: the train step imports
    # that module).
    import imageio.v3 as iio  # pylint: disable=import-outside-toplevel

    return iio
