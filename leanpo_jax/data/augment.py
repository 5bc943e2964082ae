"""A(V): the loser's video augmentation (docs/loss.md §5.3), NumPy only.

Contract:
  * ONE random augmentation is drawn per video (`sample_params`) and applied identically to every
    frame (`apply_params`), in this order: random resized crop (area fraction uniform in
    crop_scale, aspect w/h log-uniform in crop_ratio, torchvision's 10 tries then its fallback;
    resized back to H x W, bilinear), colour jitter with p jitter_p (brightness/contrast/saturation
    factors uniform in [max(0, 1-x), 1+x], hue shift uniform in [-h, h], in a random order),
    grayscale with p grayscale_p (ITU-R 601 luma, 3 equal channels), Gaussian blur with p blur_p
    (σ uniform in blur_sigma), horizontal flip with p flip_p.
  * `augment_video` keeps `keep_frames` frames at np.round(linspace(0, F-1, keep)) first (cheaper;
    the same result, as every frame gets the same parameters), then augments them:
    uint8 [F, H, W, 3] -> uint8 [keep, H, W, 3]. A video with fewer than keep frames repeats
    indices, evenly and in order, like `video.uniform_indices` (for keep = 2: [0, F-1] either way).
  * Per record: `augment_video(frames, cfg, seed=record_seed(cfg.seed, record_id))`, the same
    bytes in every process. Bad config values raise ValueError naming the key, e.g.
    "augment.crop_scale=(0.5, 0.2): expected 0 < lo <= hi <= 1".

Deviations from torchvision (RandomResizedCrop, ColorJitter, RandomGrayscale, GaussianBlur,
RandomHorizontalFlip), all small:
  * Float64 on [0, 1] throughout, rounded to uint8 once at the end; torchvision on uint8 input
    re-quantises after every op (a level or two of difference).
  * Blur kernel size follows σ (2·ceil(3σ)+1 taps) instead of a fixed kernel_size; reflect padding
    as torchvision, but a pad wider than the frame reflects repeatedly where torch would raise.
  * Luma is exactly ITU-R 601 (0.299, 0.587, 0.114, as PIL) in grayscale, saturation and contrast
    (torchvision's tensor path: 0.2989). Hue uses the float HSV round trip (the tensor path, not
    PIL's uint8 HSV). Contrast uses each frame's own mean luma, as torchvision on a [T, C, H, W] video.
  * A NumPy Generator in torchvision's draw order (crop: area, ratio per try, then top, left;
    jitter: the order, then the factors): the same distributions, not torch's random streams.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Optional, Tuple

import ml_collections
import numpy as np

from leanpo_jax.config_schema import Block, Field

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def _pair(test):
    """A check on a (lo, hi) pair of finite numbers."""
    return lambda value: len(value) == 2 and test(*value)


_STRENGTH = "strength x: factors uniform in [max(0, 1-x), 1+x]; 0 = that jitter is off"
# The `augment` block (generate.augment): the paper's A(V) defaults, each key with its range.
AUGMENT = Block(
    "A(V), the loser's video augmentation",
    crop_scale=Field((0.08, 0.3), "Random resized crop: area fraction of the frame kept (paper 0.08-0.3: a "
                     "strong zoom-in)", check=_pair(lambda lo, hi: 0 < lo <= hi <= 1), rule="0 < lo <= hi <= 1"),
    crop_ratio=Field((3 / 4, 4 / 3), "Crop aspect ratio w/h, sampled log-uniformly (torchvision's (3/4, 4/3))",
                     check=_pair(lambda lo, hi: 0 < lo <= hi), rule="0 < lo <= hi"),
    jitter_p=Field(0.8, "Probability that colour jitter is applied (all four jitters together)",
                   rule="in [0, 1]"),
    brightness=Field(0.4, f"Brightness jitter {_STRENGTH}", rule=">= 0"),
    contrast=Field(0.4, f"Contrast jitter {_STRENGTH}", rule=">= 0"),
    saturation=Field(0.2, f"Saturation jitter {_STRENGTH}", rule=">= 0"),
    hue=Field(0.1, "Hue shift h in turns of the colour wheel, uniform in [-h, h]; 0 = off", rule="in [0, 0.5]"),
    grayscale_p=Field(0.2, "Probability of converting to grayscale (3 equal channels)", rule="in [0, 1]"),
    blur_sigma=Field((0.1, 2.0), "Gaussian blur σ range in output pixels",
                     check=_pair(lambda lo, hi: 0 < lo <= hi), rule="0 < lo <= hi"),
    blur_p=Field(1.0, "Probability that the blur is applied (the paper always blurs)", rule="in [0, 1]"),
    flip_p=Field(0.5, "Probability of a horizontal flip", rule="in [0, 1]"),
    keep_frames=Field(2, "Frames kept, uniformly spaced; the loser prompt's video tokens follow it", rule=">= 1"),
    seed=Field(0, "Base seed; each record's augmentation seed is record_seed(seed, record id)"),
)


def augment_config() -> ml_collections.ConfigDict:
    """The `augment` block (generate.augment) with its defaults (AUGMENT)."""
    return AUGMENT.to_config_dict()


def check_augment_config(cfg) -> dict:
    """Validates the block (a ConfigDict or a dict); returns its values as plain floats, pairs of
    floats and ints. Raises ValueError "augment.KEY=VALUE: expected RULE" for the first bad key."""
    return AUGMENT.validate(cfg, "augment.", intro="")


def record_seed(base_seed: int, record_id: str) -> int:
    """A seed in [0, 2**63) from (base seed, record id): SHA-256, so stable across processes and
    Python runs (unlike hash(), which is salted per process)."""
    digest = hashlib.sha256(f"{int(base_seed)}/{record_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One draw of A(V). `crop` = (top, left, height, width) in input pixels; `jitter` = None (not
    applied) or ((op, factor), ...) in application order, op in JITTER_OPS (hue's factor is the
    shift in turns; a jitter of strength 0 is left out); `blur_sigma` None = no blur."""

    crop: Tuple[int, int, int, int]
    jitter: Optional[Tuple[Tuple[str, float], ...]]
    grayscale: bool
    blur_sigma: Optional[float]
    flip: bool

    def to_json(self) -> dict:
        """JSON-ready dict (lists for tuples), written with each generated pair."""
        return {"crop": [int(v) for v in self.crop],
                "jitter": None if self.jitter is None else [[op, float(f)] for op, f in self.jitter],
                "grayscale": bool(self.grayscale), "blur_sigma": self.blur_sigma, "flip": bool(self.flip)}


def _sample_crop(rng: np.random.Generator, height: int, width: int, c: dict) -> Tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params: up to 10 tries of (area, log-ratio); a try fits
    when both rounded sides are in (0, side]. Else the central crop of the whole frame, its ratio
    clamped into crop_ratio."""
    area = height * width
    (s_lo, s_hi), (r_lo, r_hi) = c["crop_scale"], c["crop_ratio"]
    for _ in range(10):
        target = area * rng.uniform(s_lo, s_hi)
        ratio = math.exp(rng.uniform(math.log(r_lo), math.log(r_hi)))
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    if width / height < r_lo:
        w, h = width, int(round(width / r_lo))
    elif width / height > r_hi:
        w, h = int(round(height * r_hi)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_params(rng: np.random.Generator, height: int, width: int, cfg) -> AugmentParams:
    """Draws one augmentation for H x W frames from `rng` (validates `cfg` first)."""
    c = check_augment_config(cfg)
    if height < 1 or width < 1:
        raise ValueError(f"sample_params needs frames of at least 1x1 pixels; got {height}x{width}")
    crop = _sample_crop(rng, int(height), int(width), c)
    jitter = None
    if rng.uniform() < c["jitter_p"]:
        order = rng.permutation(len(JITTER_OPS))  # torchvision: the order first, then the factors
        factors = {}
        for op in JITTER_OPS:
            x = c[op]
            if x > 0:  # torchvision leaves a strength-0 jitter out (factor None)
                lo, hi = (-x, x) if op == "hue" else (max(0.0, 1 - x), 1 + x)
                factors[op] = float(rng.uniform(lo, hi))
        jitter = tuple((JITTER_OPS[i], factors[JITTER_OPS[i]]) for i in order if JITTER_OPS[i] in factors)
    grayscale = bool(rng.uniform() < c["grayscale_p"])
    blur = float(rng.uniform(*c["blur_sigma"])) if rng.uniform() < c["blur_p"] else None
    flip = bool(rng.uniform() < c["flip_p"])
    return AugmentParams(crop, jitter, grayscale, blur, flip)


# ----------------------------------------------------------------------------- the operations
# All take and return float64 [N, H, W, 3] in [0, 1] and act on each frame independently.
def _resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch interpolate(bilinear, align_corners=False): source = (dst + 0.5) * in/out - 0.5,
    clamped to the frame. Crops are never larger than the output, so no antialiasing is needed."""
    def taps(out, size):
        src = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
        lo = np.floor(src).astype(np.int64)
        return lo, np.minimum(lo + 1, size - 1), src - lo

    y0, y1, fy = taps(height, x.shape[1])
    x0, x1, fx = taps(width, x.shape[2])
    fy, fx = fy[None, :, None, None], fx[None, None, :, None]
    rows = x[:, y0] * (1 - fy) + x[:, y1] * fy
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def _luma(x: np.ndarray) -> np.ndarray:
    return (_LUMA[0] * x[..., 0] + _LUMA[1] * x[..., 1] + _LUMA[2] * x[..., 2])[..., None]


def _hue_shift(x: np.ndarray, shift: float) -> np.ndarray:
    """Rotates the hue by `shift` turns: RGB -> HSV -> h + shift (mod 1) -> RGB (colorsys rules)."""
    maxc, minc = x.max(-1), x.min(-1)
    delta = maxc - minc
    s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1), 0)
    safe = np.where(delta > 0, delta, 1)  # grey pixels: hue is 0 and does not matter
    rc, gc, bc = ((maxc - x[..., i]) / safe for i in range(3))
    h = np.where(maxc == x[..., 0], bc - gc, np.where(maxc == x[..., 1], 2.0 + rc - bc, 4.0 + gc - rc))
    h = (np.where(delta > 0, h / 6.0, 0.0) + shift) % 1.0
    sector = np.floor(h * 6.0)
    f = h * 6.0 - sector
    v = maxc
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.astype(np.int64) % 6
    return np.stack([np.choose(sector, [v, q, p, p, t, v]), np.choose(sector, [t, v, v, q, p, p]),
                     np.choose(sector, [p, p, t, v, v, q])], -1)


def _jitter(x: np.ndarray, op: str, factor: float) -> np.ndarray:
    """torchvision's definitions (blends with black, the mean luma, the luma image), clipped to
    [0, 1] after every op as torchvision does."""
    if op == "brightness":
        out = x * factor
    elif op == "contrast":
        out = factor * x + (1 - factor) * _luma(x).mean(axis=(1, 2, 3), keepdims=True)
    elif op == "saturation":
        out = factor * x + (1 - factor) * _luma(x)
    elif op == "hue":
        out = _hue_shift(x, factor)
    else:
        raise ValueError(f"unknown jitter op {op!r}; expected one of {JITTER_OPS}")
    return np.clip(out, 0.0, 1.0)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian, 2·ceil(3σ)+1 normalised taps, reflect padding (rows, then columns)."""
    radius = int(math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (1, 2):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="reflect")
        n = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(k, k + n), axis=axis) for k, w in enumerate(taps))
    return x


def apply_params(frames: np.ndarray, params: AugmentParams) -> np.ndarray:
    """uint8 [F, H, W, 3] -> uint8 [F, H, W, 3]: the same crop/jitter/grayscale/blur/flip on every
    frame (per-frame results equal the stacked result). Rounds to uint8 once, at the end."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"apply_params expects uint8 [F, H, W, 3]; got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    top, left, h, w = (int(v) for v in params.crop)
    if not (h >= 1 and w >= 1 and 0 <= top and top + h <= height and 0 <= left and left + w <= width):
        raise ValueError(f"crop {params.crop} (top, left, height, width) is outside {height}x{width} frames")
    if params.blur_sigma is not None and not params.blur_sigma > 0:
        raise ValueError(f"blur_sigma={params.blur_sigma} must be > 0 (or None for no blur)")
    x = frames[:, top:top + h, left:left + w].astype(np.float64) / 255.0
    if (h, w) != (height, width):
        x = _resize_bilinear(x, height, width)
    for op, factor in params.jitter or ():
        x = _jitter(x, op, float(factor))
    if params.grayscale:
        x = np.repeat(_luma(x), 3, axis=-1)
    if params.blur_sigma is not None:
        x = _blur(x, float(params.blur_sigma))
    if params.flip:
        x = x[:, :, ::-1]
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def kept_indices(num_frames: int, keep: int) -> np.ndarray:
    """int64 [keep]: np.round(linspace(0, F-1, keep)); F < keep repeats indices (order kept)."""
    if num_frames < 1 or keep < 1:
        raise ValueError(f"kept_indices needs >= 1 frame and keep >= 1; got F={num_frames}, keep={keep}")
    return np.round(np.linspace(0, num_frames - 1, keep)).astype(np.int64)


def augment_video(frames: np.ndarray, cfg, *, seed: int) -> Tuple[np.ndarray, AugmentParams]:
    """uint8 [F, H, W, 3] -> (uint8 [keep_frames, H, W, 3], the AugmentParams drawn with
    np.random.default_rng(seed)). The same seed gives the same bytes."""
    c = check_augment_config(cfg)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"augment_video expects uint8 [F >= 1, H, W, 3]; got {frames.dtype} {frames.shape}")
    kept = frames[kept_indices(frames.shape[0], c["keep_frames"])]
    params = sample_params(np.random.default_rng(seed), frames.shape[1], frames.shape[2], cfg)
    return apply_params(kept, params), params
