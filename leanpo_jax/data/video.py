"""Video decoding and frame sampling: `read_video` for files and frame folders.

This is the module callers import: it also re-exports the shared reader contract
(`video_contract`: `VideoError`, `VideoInfo`, `FRAME_SAMPLING_MODES`, `FPS_RULES`,
`uniform_indices`, `time_indices`, `sample_indices`, `qwen_fps_count`, `is_constant_rate`,
`sampling_rule`) and the frame geometry (`frames`: `RESIZE_MODES`, `resize_frames`, `shortest_edge_size`, `normalize_frames`).
Here: the dispatch, the frame folder reader and the PyAV reader; WebP is `video_webp`.

Contract (every function below states its part):
  * A video is a file (mp4/webm/mkv/avi/gif/mov/webp or anything FFmpeg probes; the extension
    is not trusted) or a folder of frames (.jpg/.jpeg/.png, any case) sorted in natural order
    (frame_2 before frame_10). Other entries in a folder are ignored.
  * `read_video` always returns exactly `num_frames` frames, uint8 [F, H, W, 3] (static F for
    batching); `image_size` is S (square, H = W = S) or (H, W), resized by one of
    `RESIZE_MODES` (see `frames`). Uniform sampling takes `uniform_indices(n, F)` = LLaVA's
    `np.linspace(0, n-1, F, dtype=int)`; a video with fewer than F frames repeats indices.
    `frame_sampling="time"` (default; "index" is the other mode) samples uniformly in
    presentation time instead when the stream's timestamps are not evenly spaced
    (`video_contract`: the rule, and why it is the default). Frame folders have no timestamps
    and are always sampled by index.
  * Frames stay uint8 on the host; `normalize_frames` runs in the train step (numpy or jax).
  * Bad inputs raise `VideoError(reason, detail, path)` with reason one of MISSING_VIDEO,
    UNREADABLE_VIDEO, NO_FRAMES (the skip reasons of `records`). A bad `image_size`,
    `resize` or `frame_sampling` is a ValueError (a config error, raised before the path is
    looked at).
  * PyAV and imageio are imported on first use, not at import: the train step imports this
    module (for `normalize_frames`) and must run where the data readers are absent.

Readers, and why each:
  * Video files: PyAV. It demuxes without decoding (exact frame counts, truncation checks
    against the header count), seeks to keyframes, decodes threaded, and its fps is FFmpeg's
    average frame rate, the number decord (LLaVA's reader) reports.
  * GIF: PyAV too, on purpose. imageio.v3's pillow plugin (`imread(path, index=None)`) gives
    the same pixels for opaque GIFs and is about as fast, but (a) its per-frame durations are
    not FFmpeg's average frame rate, which `VideoInfo.fps` promises since decord reports it
    (50/60/70 ms delays: 16.7 fps from the durations, 20 from FFmpeg), (b) it fills transparent
    pixels with the palette colour where FFmpeg puts its own fill (white here), (c) raises
    on a truncated GIF that FFmpeg reads up to the break, (d) `index=None` stacks every frame
    in memory, and (e) it sets Pillow's process-wide GIF loading strategy as a side effect.
  * Frame folders: PIL directly. `imageio.v3.imread(file, plugin="pillow", mode="RGB")` gives
    identical pixels (it is the same `Image.open(...).convert("RGB")`), but replaces no glue
    (the reader is three lines), was measured ~30% slower per 640x360 JPEG frame read and
    resized to 384 (an extra array <-> PIL round trip: 8.3 vs 6.3 ms), and turns Pillow's
    "cannot identify image file" into "`pillow` can not handle the given uri".
  * WebP files (found by their RIFF....WEBP signature, not the extension): imageio.v3's
    pillow plugin in `video_webp` (FFmpeg's webp decoder has no animation support; the reasons
    are there). A Pillow built without WebP falls back to PyAV (still WebP only).

Frame counting (files): one demux pass reads every video packet header (no decoding) and
counts the packets that carry a frame (size > 0, not marked discard). This is exact for
containers without a frame count in their header (webm/mkv, some avi/gif) where
duration * fps is only an estimate. Packets are put in display order by pts; frame i is the
i-th pts. When the header does give a count (`stream.frames`, mp4/mov) and fewer packets exist,
the file is truncated (UNREADABLE_VIDEO). Without pts (rare avi) frames are counted in
decoder output order instead.

Presentation times (files): frame i's time is (pts_i - pts_0) * time_base in display order, so
the first frame is at 0 s; they feed time sampling and `VideoInfo.timestamps_s`. Streams
without usable pts have none (index sampling, timestamps index / fps).

Decoding: threaded (`thread_type = "AUTO"`); only the frames up to the last wanted index are
decoded, only wanted frames are converted to RGB, and when a keyframe lies between the current
position and the next wanted frame (more than `_SEEK_GAP` frames ahead) the reader seeks to it
instead of decoding the gap. Wanted frames are matched by pts, so seeking is exact; if the
decoder never outputs a wanted frame (rare: dropped or broken frames) its nearest decoded
neighbour is used and `VideoInfo.repeated` is set.
"""

from __future__ import annotations

import bisect
import functools
import os
import re
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image

from leanpo_jax.data.frames import (  # noqa: F401  (re-exported: callers resize / normalise through video)
    RESIZE_MODES, FrameGeometryError, ResizeTarget, fit_frame, normalize_frames, resize_frames, resize_target, shortest_edge_size)
from leanpo_jax.data.records import MISSING_VIDEO, NO_FRAMES, UNREADABLE_VIDEO
from leanpo_jax.data.video_contract import (  # noqa: F401  (re-exported: the reader contract)
    FPS_RULES, FRAME_SAMPLING_MODES, VideoError, VideoInfo, check_frame_sampling, is_constant_rate, qwen_fps_count,
    sample_indices, sampling_rule, time_indices, uniform_indices, video_info)
from leanpo_jax.data.video_webp import is_webp, read_webp

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".gif", ".mov", ".webp")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Seek instead of decoding through when the next wanted frame's keyframe is further ahead than
# this many frames; below it, a seek (flush + re-decode from the keyframe) is not cheaper.
_SEEK_GAP = 8


def read_video(path: str, num_frames: int, *, image_size: Union[int, Tuple[int, int]], resize: str = "direct",
               fps_sampling: Optional[float] = None, max_frames: Optional[int] = None,
               folder_fps: float = 1.0, frame_sampling: str = "time", min_source_side: int = 0,
               max_aspect_distortion: float = 0.0, fps_rule: str = "llava",
               min_frames: int = 4) -> Tuple[np.ndarray, VideoInfo]:
    """Decodes `path` (file or frame folder) to uint8 [num_frames, H, W, 3].

    `image_size`: S (H = W = S) or (H, W); `resize`: one of `RESIZE_MODES` (see
    `resize_frames`). Sampling: see `sample_indices`; `frame_sampling` is "time" (uniform in
    presentation time where the stream's timestamps are uneven) or "index"; with `fps_sampling`
    (frames per second), `fps_rule` ("llava" | "qwen") and `min_frames` (qwen) pick the frames. Frame folders have
    no frame rate: `folder_fps` stands in (timestamps, duration and fps sampling), as for a
    WebP without frame durations. Raises ValueError for a bad `image_size` / `resize` /
    `frame_sampling`, and `VideoError`:
    MISSING_VIDEO (no such path), UNREADABLE_VIDEO (zero-byte, truncated, not a video,
    decode error, unreadable image), NO_FRAMES (empty frame folder, a video stream without a
    decodable frame), VIDEO_TOO_SMALL / ASPECT_MISMATCH (a decoded frame below
    `min_source_side` px on a side, or whose aspect ratio is more than `max_aspect_distortion`
    times off the target's: a model's FramePolicy limits, 0 = unchecked).
    """
    target = resize_target(image_size, resize, min_source_side=min_source_side,
                           max_aspect_distortion=max_aspect_distortion)
    check_frame_sampling(frame_sampling)
    try:
        sampling = dict(fps_sampling=fps_sampling, max_frames=max_frames, frame_sampling=frame_sampling,
                        fps_rule=fps_rule, min_frames=int(min_frames))
        return _read(path, num_frames, target, sampling, folder_fps)
    except FrameGeometryError as e:
        raise VideoError(e.reason, e.detail, path) from e


def probe_size(path: str) -> Optional[Tuple[int, int]]:
    """(height, width) of a video's frames from its header alone (no decoding): the first frame
    of a folder, the stream of a file (PyAV), the canvas of a WebP; None when it cannot be read
    (the decode then reports why). Cheap enough to run on every record of a step's window."""
    try:
        if os.path.isdir(path):
            names = sorted((e for e in os.listdir(path) if e.lower().endswith(FRAME_EXTENSIONS)), key=_natural_key)
            if not names:
                return None
            path = os.path.join(path, names[0])
        if os.path.isdir(path) or not os.path.getsize(path):
            return None
        if path.lower().endswith(FRAME_EXTENSIONS) or is_webp(path):
            with Image.open(path) as image:
                return int(image.height), int(image.width)
        with _av().open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                return None
            ctx = container.streams.video[0].codec_context
            return (int(ctx.height), int(ctx.width)) if ctx.height and ctx.width else None
    except (OSError, ValueError, EOFError, Image.DecompressionBombError, _av().error.FFmpegError):
        return None


def policy_read_args(policy) -> dict:
    """`read_video` keyword arguments of a contract.FramePolicy (size, resize, source limits,
    fps rule)."""
    return dict(image_size=policy.size, resize=policy.resize, min_source_side=policy.min_source_side,
                max_aspect_distortion=policy.max_aspect_distortion, fps_rule=policy.fps_rule)


def data_read_args(policy, data) -> dict:
    """`read_video` keyword arguments of a model's FramePolicy and a `data` config block
    (data.frame_sampling, data.fps_sampling: 0 = uniform F frames, data.min_frames)."""
    rate = float(data.fps_sampling)
    return dict(policy_read_args(policy), frame_sampling=data.frame_sampling,
                fps_sampling=rate if rate > 0 else None, min_frames=int(data.min_frames))


def _read(path, num_frames, target, sampling: dict, folder_fps):
    if not os.path.exists(path):
        raise VideoError(MISSING_VIDEO, "no such file or folder", path)
    if os.path.isdir(path):
        return _read_folder(path, num_frames, target, sampling, folder_fps)
    if os.path.getsize(path) == 0:
        raise VideoError(UNREADABLE_VIDEO, "the file is empty (0 bytes)", path)
    if is_webp(path):
        out = read_webp(path, num_frames, target, sampling, folder_fps)
        if out is not None:
            return out
    try:
        return _read_file(path, num_frames, target, sampling)
    except VideoError:
        raise
    except (_av().error.FFmpegError, OSError, EOFError) as e:  # FFmpeg's and the OS's "cannot read"
        raise VideoError(UNREADABLE_VIDEO, f"cannot decode: {type(e).__name__}: {e}", path) from e


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_folder(path, num_frames, target: ResizeTarget, sampling: dict, fps):
    names = sorted((e for e in os.listdir(path)
                    if e.lower().endswith(FRAME_EXTENSIONS) and os.path.isfile(os.path.join(path, e))),
                   key=_natural_key)
    if not names:
        raise VideoError(NO_FRAMES, f"the frame folder has no {'/'.join(FRAME_EXTENSIONS)} files", path)
    indices = sample_indices(len(names), num_frames, fps, **sampling)  # no times: by index
    cache = {}
    for i in np.unique(indices):
        file = os.path.join(path, names[i])
        try:
            with Image.open(file) as image:
                cache[int(i)] = fit_frame(image, target)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise VideoError(UNREADABLE_VIDEO, f"frame {names[i]!r} cannot be read: {e}", path) from e
    frames = np.stack([cache[int(i)] for i in indices])
    return frames, video_info(len(names), fps, indices, False, frame_sampling=sampling["frame_sampling"])


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


def _read_file(path, num_frames, target: ResizeTarget, sampling: dict):
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
        times_s = None
        if by_pts and stream.time_base:
            times_s = (np.asarray(pts, np.int64) - pts[0]) * float(stream.time_base)
    if n == 0:
        raise VideoError(NO_FRAMES, "the video stream has no frames", path)
    if header_frames and stored < header_frames:
        raise VideoError(UNREADABLE_VIDEO, f"truncated: the header lists {header_frames} frames but "
                         f"the file holds {stored}", path)
    indices = sample_indices(n, num_frames, fps, times_s=times_s, **sampling)
    wanted = sorted(set(int(i) for i in indices))
    # Pass 2: decode what is needed. Reopening is cheaper and safer than seeking back to the
    # start (streams whose first timestamp is not 0 make "seek to 0" demuxer-dependent).
    got = {}
    if by_pts:
        if not _decode_by_pts(path, pts, keyframes, wanted, target, got, seek=True):
            _decode_by_pts(path, pts, keyframes, wanted, target, got, seek=False)
    else:
        _decode_in_order(path, wanted, target, got)
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
    return np.stack(frames), video_info(n, fps, indices, missing, times_s=times_s,
                                        frame_sampling=sampling["frame_sampling"])


def _convert(frame, target) -> np.ndarray:
    # rgb24 via swscale (as imageio and LLaVA's readers), then the PIL resize policy only if the
    # size differs. (frame.to_image() gives the same pixels but measured several times slower.)
    # One swscale thread: the same pixels as automatic threading, independent of scheduling,
    # and faster here (0.67 vs 0.85-2.0 ms per 720p frame on 2 cores) since grain's read
    # threads already run records in parallel.
    rgb = frame.to_ndarray(format="rgb24", **swscale_one_thread())
    return fit_frame(rgb, resize_target(target))


def _decode_by_pts(path, pts, keyframes, wanted, target, got: dict, *, seek: bool) -> bool:
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
                    got[rank] = _convert(frame, target)
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


def _decode_in_order(path, wanted, target, got: dict) -> None:
    """Fallback without usable pts: frame i is the decoder's i-th output frame. `target`: a
    `ResizeTarget` or an `image_size` (direct resize)."""
    last, wanted = max(wanted), set(wanted)
    with _open(path) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            if i in wanted:
                got[i] = _convert(frame, target)
            if i >= last:
                break
