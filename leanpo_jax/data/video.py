"""Video decoding, frame sampling, model-matching resize and normalisation.

Contract (every function below states its part):
  * A video is a file (mp4/webm/mkv/avi/gif/mov/webp or anything FFmpeg probes; the extension
    is not trusted) or a folder of frames (.jpg/.jpeg/.png, any case) sorted in natural order
    (frame_2 before frame_10). Other entries in a folder are ignored.
  * `read_video` always returns exactly `num_frames` frames, uint8 [F, H, W, 3] (static F for
    batching); `image_size` is S (square, H = W = S) or (H, W). Uniform sampling takes
    `uniform_indices(n, F)` = LLaVA's `np.linspace(0, n-1, F, dtype=int)`; a video with fewer
    than F frames repeats indices.
  * Frames stay uint8 on the host; `normalize_frames` runs in the train step (numpy or jax).
  * Bad inputs raise `VideoError(reason, detail, path)` with reason one of MISSING_VIDEO,
    UNREADABLE_VIDEO, NO_FRAMES (the skip reasons of `records`). A bad `image_size` or
    `resize` is a ValueError (a config error, raised before the path is looked at).

Resize policies (`RESIZE_MODES`; `resize_frames` and `read_video(..., resize=)`), all PIL
bicubic on the uint8 RGB image with no reducing_gap, as transformers' PIL image processors:
  * "direct" (default; SigLIP / LLaVA-OneVision, Qwen2-VL's H x W): resize to H x W, aspect
    ratio not kept, no crop. A frame already H x W is returned as is (PIL's same-size resize is
    an unchanged copy).
  * "shortest_edge_crop" (CLIP / LLaVA-NeXT-Video; square S only): resize so the shorter side
    is S and the longer side `int(S * long / short)`, then centre-crop S x S at
    top = (h' - S) // 2, left = (w' - S) // 2. Verified against transformers 5.24's code:
    `image_transforms.get_resize_output_image_size(default_to_square=False)` (short side =
    size, long side `int(size * long / short)`, no max_size here), `image_transforms.resize`
    (a uint8 array goes to PIL without rescaling, `PIL.Image.resize((w, h), resample,
    reducing_gap=None)`), `image_transforms.center_crop` (top = (orig_h - crop_h) // 2,
    left = (orig_w - crop_w) // 2; its zero padding never happens here since h', w' >= S),
    and `PilBackend._preprocess` / `CLIPImageProcessorPil` (resample BICUBIC, resize then
    centre crop, then rescale / normalise, which `normalize_frames` does). The tests compare
    with `CLIPImageProcessorPil` itself, bit for bit.

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
    pillow plugin (libwebp, the reference decoder, which composites animation frames). Here
    imageio serves: FFmpeg's webp decoder has no animation support (PyAV 18.1 / libavcodec 62
    fails on an animated WebP with InvalidDataError), and imageio gives frame count
    (`properties`), per-frame durations (`metadata`) and RGB frames (`read(index=, mode=)`)
    through one API. fps = frames / total duration (an average rate, like FFmpeg's); a WebP
    without durations (a still image) uses `folder_fps`. A Pillow built without WebP falls
    back to PyAV (still WebP only). imageio is imported on first use (the train step imports
    this module and must not load data readers).

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
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from leanpo_jax.data.contract import RESIZE_MODES
from leanpo_jax.data.records import FIX_HINTS, MISSING_VIDEO, NO_FRAMES, UNREADABLE_VIDEO

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".gif", ".mov", ".webp")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
# "direct": bicubic to H x W (SigLIP); "shortest_edge_crop": shorter side to S, centre crop
# S x S (CLIP). See the module docstring.
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


def read_video(path: str, num_frames: int, *, image_size: Union[int, Tuple[int, int]], resize: str = "direct",
               fps_sampling: Optional[float] = None, max_frames: Optional[int] = None,
               folder_fps: float = 1.0) -> Tuple[np.ndarray, VideoInfo]:
    """Decodes `path` (file or frame folder) to uint8 [num_frames, H, W, 3].

    `image_size`: S (H = W = S) or (H, W); `resize`: one of `RESIZE_MODES` (see
    `resize_frames`). Sampling: see `sample_indices`. Frame folders have no frame rate:
    `folder_fps` stands in (timestamps, duration and fps sampling), as for a WebP without
    frame durations. Raises ValueError for a bad `image_size` / `resize`, and `VideoError`:
    MISSING_VIDEO (no such path), UNREADABLE_VIDEO (zero-byte, truncated, not a video,
    decode error, unreadable image), NO_FRAMES (empty frame folder, a video stream without a
    decodable frame).
    """
    target = _target(image_size, resize)
    if not os.path.exists(path):
        raise VideoError(MISSING_VIDEO, "no such file or folder", path)
    if os.path.isdir(path):
        return _read_folder(path, num_frames, target, fps_sampling, max_frames, folder_fps)
    if os.path.getsize(path) == 0:
        raise VideoError(UNREADABLE_VIDEO, "the file is empty (0 bytes)", path)
    if _is_webp(path):
        out = _read_webp(path, num_frames, target, fps_sampling, max_frames, folder_fps)
        if out is not None:
            return out
    try:
        return _read_file(path, num_frames, target, fps_sampling, max_frames)
    except VideoError:
        raise
    except (_av().error.FFmpegError, OSError, EOFError) as e:  # FFmpeg's and the OS's "cannot read"
        raise VideoError(UNREADABLE_VIDEO, f"cannot decode: {type(e).__name__}: {e}", path) from e


def resize_frames(frames: np.ndarray, image_size: Union[int, Tuple[int, int]],
                  resize: str = "direct") -> np.ndarray:
    """uint8 [N, h, w, 3] -> uint8 [N, H, W, 3] exactly as transformers' PIL image processors
    resize (bit-exact; `image_size` S means H = W = S):

      * "direct" (SigLIP, the processor LLaVA-OneVision used): `PIL.Image.resize((W, H),
        BICUBIC)` on the uint8 image, no reducing_gap, aspect ratio not kept, no crop.
      * "shortest_edge_crop" (CLIPImageProcessor, `shortest_edge` S + `crop_size` S x S; square
        only): bicubic resize so the shorter side is S and the longer `int(S * long / short)`,
        then the centre S x S crop at top = (h' - S) // 2, left = (w' - S) // 2.

    Frames that already have the output size come back unchanged (the same array). Raises
    ValueError for a bad `resize` (naming it and `RESIZE_MODES`), a bad `image_size`, or a
    non-square size with "shortest_edge_crop".
    """
    target = _target(image_size, resize)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"resize_frames expects uint8 [N, H, W, 3]; got {frames.dtype} {frames.shape}")
    if frames.shape[1:3] == (target.height, target.width):
        return frames  # both modes: PIL returns an unchanged copy for a same-size resize, no crop
    out = np.empty((frames.shape[0], target.height, target.width, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = _fit(frame, target)
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


class _Target(NamedTuple):
    """A validated output size and resize mode."""

    height: int
    width: int
    mode: str


def _target(image_size, resize: str = "direct") -> _Target:
    """`image_size` (S or (H, W)) and `resize` checked; a `_Target` passes through."""
    if isinstance(image_size, _Target):
        return image_size
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r} is not a resize mode; expected one of {RESIZE_MODES}")
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        h, w = image_size
    elif isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        h = w = image_size
    else:
        raise ValueError(f"image_size={image_size!r}: expected an int S (S x S) or (height, width)")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in (h, w)):
        raise ValueError(f"image_size={image_size!r}: sizes must be integers >= 1")
    if resize == "shortest_edge_crop" and h != w:
        raise ValueError(f"resize='shortest_edge_crop' needs a square image_size (shortest edge S, "
                         f"crop S x S, as CLIP's processor); got image_size={image_size!r}")
    return _Target(int(h), int(w), resize)


def shortest_edge_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """(h', w') after transformers' shortest-edge resize (`get_resize_output_image_size` with
    default_to_square=False, no max_size): the shorter side becomes `size`, the longer
    `int(size * long / short)`; a square image goes to size x size."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


def _fit(image, target: _Target) -> np.ndarray:
    """A PIL image or uint8 [h, w, 3] array -> uint8 [H, W, 3] by `target`'s policy (a view of
    the resized image, or the input itself when nothing changes)."""
    if isinstance(image, Image.Image):
        h, w = image.height, image.width
    else:
        h, w = image.shape[:2]
    if target.mode == "direct":
        new_hw = (target.height, target.width)
    else:
        new_hw = shortest_edge_size(h, w, target.height)
    if (h, w) != new_hw:
        if not isinstance(image, Image.Image):
            image = Image.fromarray(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        image = image.resize((new_hw[1], new_hw[0]), resample=Image.Resampling.BICUBIC)
    elif isinstance(image, Image.Image) and image.mode != "RGB":
        image = image.convert("RGB")
    rgb = np.asarray(image)
    if new_hw != (target.height, target.width):  # shortest_edge_crop: the centre crop
        top, left = (new_hw[0] - target.height) // 2, (new_hw[1] - target.width) // 2
        rgb = rgb[top:top + target.height, left:left + target.width]
    return rgb


def _info(n: int, fps: float, indices: np.ndarray, repeated: bool) -> VideoInfo:
    indices = np.asarray(indices, np.int64)
    repeated = bool(repeated or len(np.unique(indices)) < len(indices))
    return VideoInfo(num_source_frames=n, fps=float(fps), duration_s=n / fps, indices=indices,
                     timestamps_s=indices / fps, repeated=repeated)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_folder(path, num_frames, target: _Target, fps_sampling, max_frames, fps):
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
                cache[int(i)] = _fit(image, target)
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


def _iio():
    # imageio.v3 on first WebP read, not at import (as PyAV: the train step imports this module).
    import imageio.v3 as iio  # pylint: disable=import-outside-toplevel

    return iio


def _is_webp(path: str) -> bool:
    """True when the file starts with the WebP signature (RIFF, 4 size bytes, WEBP). A file
    that cannot be opened is not (PyAV then reports why: UNREADABLE_VIDEO)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _read_webp(path, num_frames, target: _Target, fps_sampling, max_frames, folder_fps):
    """A WebP (still or animated) through imageio.v3's pillow plugin, or None when this Pillow
    cannot open WebP (the caller then tries PyAV, which reads still WebP).

    One pass in display order reads each frame (Pillow sets a WebP frame's duration only once
    it is decoded, and animation frames decode sequentially anyway) and keeps the wanted
    frames, resized. With fps sampling the indices depend on the fps, known after that pass;
    a second pass then reads the wanted frames.
    """
    iio = _iio()
    try:
        file = iio.imopen(path, "r", plugin="pillow")
    except OSError:
        return None
    try:
        with file:
            n = int(file.properties(index=...).n_images or 1)
            indices = None if fps_sampling is not None else uniform_indices(n, num_frames)
            wanted = set() if indices is None else {int(i) for i in indices}
            got, durations = {}, []
            for i in range(n):
                rgb = file.read(index=i, mode="RGB")
                durations.append(file.metadata(index=i).get("duration"))
                if i in wanted:
                    got[i] = _fit(rgb, target)
            total_ms = float(sum(durations)) if all(durations) else 0.0  # ms; None: no timing
            fps = n * 1000.0 / total_ms if total_ms > 0 else float(folder_fps)
            if indices is None:
                indices = sample_indices(n, num_frames, fps, fps_sampling=fps_sampling, max_frames=max_frames)
                for i in sorted({int(j) for j in indices}):
                    got[i] = _fit(file.read(index=i, mode="RGB"), target)
    except (OSError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise VideoError(UNREADABLE_VIDEO, f"cannot decode the WebP: {type(e).__name__}: {e}", path) from e
    frames = np.stack([got[int(i)] for i in indices])
    return frames, _info(n, fps, indices, False)


def _open(path):
    container = _av().open(path, metadata_errors="ignore")
    if not container.streams.video:
        container.close()
        raise VideoError(UNREADABLE_VIDEO, "no video stream (not a video, or truncated before its "
                         "stream header)", path)
    container.streams.video[0].thread_type = "AUTO"  # FFmpeg picks frame and/or slice threads
    return container


def _read_file(path, num_frames, target: _Target, fps_sampling, max_frames):
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
    return np.stack(frames), _info(n, fps, indices, missing)


def _convert(frame, target) -> np.ndarray:
    # rgb24 via swscale (as imageio and LLaVA's readers), then the PIL resize policy only if the
    # size differs. (frame.to_image() gives the same pixels but measured several times slower.)
    # One swscale thread: the same pixels as automatic threading, independent of scheduling,
    # and faster here (0.67 vs 0.85-2.0 ms per 720p frame on 2 cores) since grain's read
    # threads already run records in parallel.
    rgb = frame.to_ndarray(format="rgb24", **swscale_one_thread())
    return _fit(rgb, _target(target))


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
    `_Target` or an `image_size` (direct resize)."""
    last, wanted = max(wanted), set(wanted)
    with _open(path) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            if i in wanted:
                got[i] = _convert(frame, target)
            if i >= last:
                break
