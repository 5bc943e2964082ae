"""Frame geometry and normalisation: model-matching resize policies and (x / 255 - mean) / std.

Pure numpy / PIL (jax only inside `normalize_frames`, for jax inputs): the train step imports
`normalize_frames` and must not load the data readers (PyAV, imageio, grain). The readers in
`video` / `video_webp` resize each decoded frame with `fit_frame`; `resize_frames` is the same
policy on a stack of frames.

Contract:
  * Frames are uint8 RGB [..., H, W, 3]; they stay uint8 on the host and `normalize_frames`
    runs in the train step (numpy or jax).
  * `image_size` is S (square, H = W = S) or (H, W). A bad `image_size` or `resize` is a
    ValueError (a config error; the readers raise it before the path is looked at).

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
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple, Union

import numpy as np
from PIL import Image

# "direct": bicubic to H x W (SigLIP); "shortest_edge_crop": shorter side to S, centre crop
# S x S (CLIP). See the module docstring. Defined beside FramePolicy, which validates it too.
from leanpo_jax.data.contract import RESIZE_MODES  # noqa: F401  (re-exported: the policies resize_frames takes)


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
    target = resize_target(image_size, resize)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"resize_frames expects uint8 [N, H, W, 3]; got {frames.dtype} {frames.shape}")
    if frames.shape[1:3] == (target.height, target.width):
        return frames  # both modes: PIL returns an unchanged copy for a same-size resize, no crop
    out = np.empty((frames.shape[0], target.height, target.width, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = fit_frame(frame, target)
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


def shortest_edge_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """(h', w') after transformers' shortest-edge resize (`get_resize_output_image_size` with
    default_to_square=False, no max_size): the shorter side becomes `size`, the longer
    `int(size * long / short)`; a square image goes to size x size."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


class ResizeTarget(NamedTuple):
    """A validated output size and resize mode (what the readers pass down per frame), and the
    source-geometry limits of the model's FramePolicy (0 = unchecked): `min_side`, the least
    height and width a decoded frame may have; `max_distortion`, the largest factor by which
    its aspect ratio (w / h) may differ from the target's (either way)."""

    height: int
    width: int
    mode: str
    min_side: int = 0
    max_distortion: float = 0.0


class FrameGeometryError(Exception):
    """A decoded frame the target's limits refuse; `reason` is records.VIDEO_TOO_SMALL or
    records.ASPECT_MISMATCH, `detail` names the sizes. The readers re-raise it as a
    `VideoError` naming the file (hence a counted skip). Not a ValueError on purpose: the
    frame-folder reader turns ValueErrors of PIL into UNREADABLE_VIDEO."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def check_source_geometry(height: int, width: int, target: ResizeTarget) -> None:
    """Raises FrameGeometryError when a decoded h x w frame breaks `target`'s limits."""
    from leanpo_jax.data.records import ASPECT_MISMATCH, VIDEO_TOO_SMALL  # pylint: disable=import-outside-toplevel

    if target.min_side and min(height, width) < target.min_side:
        raise FrameGeometryError(VIDEO_TOO_SMALL, f"the frames are {height}x{width} (h x w); this model "
                                 f"needs both sides >= {target.min_side} px (FramePolicy.min_source_side)")
    if target.max_distortion:
        ratio = (width / height) / (target.width / target.height)
        factor = max(ratio, 1.0 / ratio)
        if factor > target.max_distortion:
            raise FrameGeometryError(
                ASPECT_MISMATCH, f"the frames are {height}x{width} (h x w), aspect {width / height:.3g}; the bucket "
                f"is {target.height}x{target.width} (aspect {target.width / target.height:.3g}): a direct resize "
                f"would distort it {factor:.3g}x, over FramePolicy.max_aspect_distortion={target.max_distortion:g}")


def resize_target(image_size, resize: str = "direct", *, min_source_side: int = 0,
                  max_aspect_distortion: float = 0.0) -> ResizeTarget:
    """`image_size` (S or (H, W)) and `resize` checked; a `ResizeTarget` passes through.
    `min_source_side` / `max_aspect_distortion`: the source limits (ResizeTarget; 0 = none)."""
    if isinstance(image_size, ResizeTarget):
        return image_size
    if int(min_source_side) < 0 or float(max_aspect_distortion) < 0 or 0 < float(max_aspect_distortion) < 1:
        raise ValueError(f"min_source_side={min_source_side!r} must be >= 0 and max_aspect_distortion="
                         f"{max_aspect_distortion!r} 0 (unchecked) or >= 1")
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
    return ResizeTarget(int(h), int(w), resize, int(min_source_side), float(max_aspect_distortion))


def fit_frame(image, target: ResizeTarget) -> np.ndarray:
    """A PIL image or uint8 [h, w, 3] array -> uint8 [H, W, 3] by `target`'s policy (a view of
    the resized image, or the input itself when nothing changes)."""
    if isinstance(image, Image.Image):
        h, w = image.height, image.width
    else:
        h, w = image.shape[:2]
    check_source_geometry(h, w, target)
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
