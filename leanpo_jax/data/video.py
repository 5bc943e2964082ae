"""Video decoding, frame sampling, SigLIP-matching resize and normalisation.

Contract (every function below states its part):
  * A video is a file (mp4/webm/mkv/avi/gif/mov or anything FFmpeg probes; the extension is not
    trusted) decoded with PyAV, or a folder of frames (.jpg/.jpeg/.png, any case) sorted in
    natural order (frame_2 before frame_10). Other entries in a folder are ignored.
  * `read_video` always returns exactly `num_frames` frames, uint8 [F, S, S, 3] (static F for
    batching). Uniform sampling takes `uniform_indices(n, F)` = LLaVA's
    `np.linspace(0, n-1, F, dtype=int)`; a video with fewer than F frames repeats indices.
  * Frames stay uint8 on the host; `normalize_frames` runs in the train step (numpy or jax).
  * Bad inputs raise `VideoError(reason, detail, path)` with reason one of MISSING_VIDEO,
    UNREADABLE_VIDEO, NO_FRAMES (the skip reasons of `records`).

Frame counting (files): one demux pass reads every video packet header (no decoding) and
counts the packets that carry a frame (size > 0, not marked discard). This is exact for
containers without a frame count in their header (webm/mkv, some avi/gif) where
duration * fps is only an estimate. Packets are put in display order by pts; frame i is the
i-th pts. When the header does give a count (`stream.frames`, mp4/mov) and fewer packets exist,
the file is truncated (UNREADABLE_VIDEO). Without pts (rare avi) frames are counted in
decoder output order instead.

Decoding: threaded (`thread_type = "AUTO"`); only the frames up to the last wanted index are
decoded, only wanted frames are converted to RGB, and when a keyframe lies between the current
position and the next wanted frame (more than `_SEEK_GAP` frames ahead) the reader seeks to it
instead of decoding the gap. Wanted frames are matched by pts, so seeking is exact; if the
decoder never outputs a wanted frame (rare: dropped or broken frames) its nearest decoded
neighbour is used and `VideoInfo.repeated` is set.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import os
import re
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from leanpo_jax.data.records import FIX_HINTS, MISSING_VIDEO, NO_FRAMES, UNREADABLE_VIDEO

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".gif", ".mov")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Seek instead of decoding through when the next wanted frame's keyframe is further ahead than
# this many frames; below it, a seek (flush + re-decode from the keyframe) is not cheaper.
_SEEK_GAP = 8


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


def read_video(path: str, num_frames: int, *, image_size: int, fps_sampling: Optional[float] = None,
               max_frames: Optional[int] = None, folder_fps: float = 1.0) -> Tuple[np.ndarray, VideoInfo]:
    """Decodes `path` (file or frame folder) to uint8 [num_frames, image_size, image_size, 3].

    Sampling: see `sample_indices`. Frame folders have no frame rate: `folder_fps` stands in
    (timestamps, duration and fps sampling). Raises `VideoError`: MISSING_VIDEO (no such
    path), UNREADABLE_VIDEO (zero-byte, truncated, not a video, decode error, unreadable
    image), NO_FRAMES (empty frame folder, a video stream without a decodable frame).
    """
    if not os.path.exists(path):
        raise VideoError(MISSING_VIDEO, "no such file or folder", path)
    if os.path.isdir(path):
        return _read_folder(path, num_frames, image_size, fps_sampling, max_frames, folder_fps)
    if os.path.getsize(path) == 0:
        raise VideoError(UNREADABLE_VIDEO, "the file is empty (0 bytes)", path)
    try:
        return _read_file(path, num_frames, image_size, fps_sampling, max_frames)
    except VideoError:
        raise
    except (_av().error.FFmpegError, OSError, EOFError) as e:  # FFmpeg's and the OS's "cannot read"
        raise VideoError(UNREADABLE_VIDEO, f"cannot decode: {type(e).__name__}: {e}", path) from e


def resize_frames(frames: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, S, S, 3] exactly as transformers' SigLIP image processor
    (PIL backend, the one LLaVA used) resizes: a direct resize (no aspect ratio, no crop) with
    `PIL.Image.resize((S, S), BICUBIC)` on the uint8 image, no reducing_gap. Bit-exact."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"resize_frames expects uint8 [N, H, W, 3]; got {frames.dtype} {frames.shape}")
    if frames.shape[1:3] == (image_size, image_size):
        return frames  # PIL returns an unchanged copy for a same-size resize
    out = np.empty((frames.shape[0], image_size, image_size, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = _resize_image(Image.fromarray(frame), image_size)
    return out


def normalize_frames(frames, mean: Union[float, Sequence[float]] = 0.5,
                     std: Union[float, Sequence[float]] = 0.5):
    """uint8 [..., 3] -> float32 (x / 255 - mean) / std per channel (last axis).

    Works on numpy arrays (returns numpy) and jax arrays (returns jax; the train step calls it on
    device so frames travel as uint8). The op order is the SigLIP processor's (rescale, then
    subtract, then divide, all in float32), which makes the numpy result equal to it.
    """
    if isinstance(frames, np.ndarray):
        xp = np
    else:
        import jax.numpy as xp  # pylint: disable=import-outside-toplevel  (numpy users need no jax)
    x = frames.astype(xp.float32) / xp.float32(255.0)
    return (x - xp.asarray(mean, xp.float32)) / xp.asarray(std, xp.float32)


# ---------------------------------------------------------------------------------- internals


def _resize_image(image: Image.Image, image_size: int) -> np.ndarray:
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), resample=Image.Resampling.BICUBIC)
    return np.asarray(image)


def _info(n: int, fps: float, indices: np.ndarray, repeated: bool) -> VideoInfo:
    indices = np.asarray(indices, np.int64)
    repeated = bool(repeated or len(np.unique(indices)) < len(indices))
    return VideoInfo(num_source_frames=n, fps=float(fps), duration_s=n / fps, indices=indices,
                     timestamps_s=indices / fps, repeated=repeated)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_folder(path, num_frames, image_size, fps_sampling, max_frames, fps):
    names = sorted((e for e in os.listdir(path)
                    if e.lower().endswith(FRAME_EXTENSIONS) and os.path.isfile(os.path.join(path, e))),
                   key=_natural_key)
    if not names:
        raise VideoError(NO_FRAMES, f"the frame folder has no {'/'.join(FRAME_EXTENSIONS)} files", path)
    indices = sample_indices(len(names), num_frames, fps, fps_sampling=fps_sampling, max_frames=max_frames)
    cache = {}
    for i in np.unique(indices):
        file = os.path.join(path, names[i])
        try:
            with Image.open(file) as image:
                cache[int(i)] = _resize_image(image, image_size)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise VideoError(UNREADABLE_VIDEO, f"frame {names[i]!r} cannot be read: {e}", path) from e
    frames = np.stack([cache[int(i)] for i in indices])
    return frames, _info(len(names), fps, indices, False)


def _stream_fps(stream, pts: Optional[list], n: int) -> float:
    """The container's average frame rate (what decord, hence LLaVA, uses); else the rate the
    pts span measures; else 1.0 so durations stay finite."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and float(rate) > 0:
            return float(rate)
    if pts and n > 1 and stream.time_base and pts[-1] > pts[0]:
        return (n - 1) / float((pts[-1] - pts[0]) * stream.time_base)
    return 1.0


@functools.lru_cache(maxsize=None)  # called per decoded / encoded frame
def swscale_one_thread(pyav_version: Optional[str] = None) -> dict:
    """Keyword arguments that make PyAV's `reformat` / `to_ndarray` convert on one swscale
    thread: {"threads": 1} from PyAV 17 (which added threaded conversion, automatic by
    default), {} before (always one thread). `pyav_version` defaults to the installed one."""
    version = pyav_version or _av().__version__
    return {"threads": 1} if int(version.split(".")[0]) >= 17 else {}


def _av():
    # Imported on first decode, not at import: the train step uses normalize_frames from this
    # module and must run where PyAV is absent (the GPU image).
    import av  # pylint: disable=import-outside-toplevel

    return av


def _open(path):
    container = _av().open(path, metadata_errors="ignore")
    if not container.streams.video:
        container.close()
        raise VideoError(UNREADABLE_VIDEO, "no video stream (not a video, or truncated before its "
                         "stream header)", path)
    container.streams.video[0].thread_type = "AUTO"  # FFmpeg picks frame and/or slice threads
    return container


def _read_file(path, num_frames, image_size, fps_sampling, max_frames):
    # Pass 1: demux only (no decoding) to count frames and find pts and keyframes.
    with _open(path) as container:
        stream = container.streams.video[0]
        pts, keys, stored = [], [], 0
        for packet in container.demux(stream):
            if packet.size == 0:  # flush packets carry no frame
                continue
            stored += 1
            if packet.is_discard:  # a frame an edit list cuts: stored, never shown
                continue
            pts.append(packet.pts)
            keys.append(packet.is_keyframe)
        n, header_frames = len(pts), stream.frames
        by_pts = n > 0 and None not in pts and len(set(pts)) == n
        if by_pts:
            order = sorted(range(n), key=pts.__getitem__)  # decode order -> display order
            pts = [pts[i] for i in order]
            keyframes = [rank for rank, i in enumerate(order) if keys[i]]
        fps = _stream_fps(stream, pts if by_pts else None, n)
    if n == 0:
        raise VideoError(NO_FRAMES, "the video stream has no frames", path)
    if header_frames and stored < header_frames:
        raise VideoError(UNREADABLE_VIDEO, f"truncated: the header lists {header_frames} frames but "
                         f"the file holds {stored}", path)
    indices = sample_indices(n, num_frames, fps, fps_sampling=fps_sampling, max_frames=max_frames)
    wanted = sorted(set(int(i) for i in indices))
    # Pass 2: decode what is needed. Reopening is cheaper and safer than seeking back to the
    # start (streams whose first timestamp is not 0 make "seek to 0" demuxer-dependent).
    got = {}
    if by_pts:
        if not _decode_by_pts(path, pts, keyframes, wanted, image_size, got, seek=True):
            _decode_by_pts(path, pts, keyframes, wanted, image_size, got, seek=False)
    else:
        _decode_in_order(path, wanted, image_size, got)
    if not got:
        raise VideoError(NO_FRAMES, f"no frame could be decoded from {n} packets", path)
    decoded = sorted(got)
    frames, missing = [], False
    for i in indices:
        j = int(i)
        if j not in got:  # the decoder never output it: take the nearest decoded neighbour
            missing = True
            k = bisect.bisect_left(decoded, j)
            j = min(decoded[max(k - 1, 0):k + 1], key=lambda d, i=int(i): abs(d - i))
        frames.append(got[j])
    return np.stack(frames), _info(n, fps, indices, missing)


def _convert(frame, image_size: int) -> np.ndarray:
    # rgb24 via swscale (as imageio and LLaVA's readers), then PIL bicubic only if the size
    # differs. (frame.to_image() gives the same pixels but measured several times slower.)
    # One swscale thread: the same pixels as automatic threading, independent of scheduling,
    # and faster here (0.67 vs 0.85-2.0 ms per 720p frame on 2 cores) since grain's read
    # threads already run records in parallel.
    rgb = frame.to_ndarray(format="rgb24", **swscale_one_thread())
    if rgb.shape[:2] == (image_size, image_size):
        return rgb
    return _resize_image(Image.fromarray(rgb), image_size)


def _decode_by_pts(path, pts, keyframes, wanted, image_size, got: dict, *, seek: bool) -> bool:
    """Adds {display index: resized uint8 frame} to `got` for the wanted indices not in it yet.

    Decodes forward from the start; with `seek`, before the next wanted frame it seeks to the
    last keyframe at or before it when that keyframe is more than _SEEK_GAP frames ahead.
    Returns False if a seek landed past its target (an inexact index): the caller then
    repeats without seeking. Wanted frames the decoder never outputs are left out.
    """
    rank_of = {p: r for r, p in enumerate(pts)}
    todo = [w for w in wanted if w not in got]  # ascending; todo[0] is the next frame to find
    with _open(path) as container:
        stream = container.streams.video[0]
        position, seek_to = -1, None
        while todo:
            if seek_to is not None:
                container.seek(pts[seek_to], stream=stream, backward=True, any_frame=False)
            just_seeked, seek_to = seek_to is not None, None
            for frame in container.decode(stream):
                rank = rank_of.get(frame.pts)
                if rank is None or rank <= position:
                    continue  # not in the index, or already passed
                if just_seeked and rank > todo[0]:
                    return False
                just_seeked, position = False, rank
                while todo and todo[0] < rank:
                    todo.pop(0)  # skipped by the decoder: read_video fills it from a neighbour
                if todo and todo[0] == rank:
                    got[rank] = _convert(frame, image_size)
                    todo.pop(0)
                if not todo:
                    return True
                k = bisect.bisect_right(keyframes, todo[0]) - 1
                if seek and k >= 0 and keyframes[k] > rank + _SEEK_GAP:
                    seek_to = keyframes[k]
                    break
            else:
                return True  # end of stream
    return True


def _decode_in_order(path, wanted, image_size, got: dict) -> None:
    """Fallback without usable pts: frame i is the decoder's i-th output frame."""
    last, wanted = max(wanted), set(wanted)
    with _open(path) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            if i in wanted:
                got[i] = _convert(frame, image_size)
            if i >= last:
                break
