"""A(V): the loser's video augmentation (shared/method.md §3), NumPy only.

One random augmentation, drawn once per video and applied identically to every frame:
random resized crop (area scale in crop_scale, aspect log-uniform in crop_ratio, resized back
to H x W, bilinear), colour jitter with p jitter_p (brightness, contrast, saturation factors
uniform in [1-x, 1+x], hue shift uniform in [-h, h], the four in a random order), grayscale with
p grayscale_p (ITU-R 601 luma), Gaussian blur (σ uniform in blur_sigma, with p blur_p),
horizontal flip with p flip_p; then `keep_frames` uniformly spaced frames are kept
(indices round(linspace(0, F-1, keep)); a shorter video repeats indices, as video.py does).
The kept frames are selected first: the parameters are shared, so the result is the same.
Seeded per record: `augment_video(frames, cfg, seed=record_seed(cfg.seed, record_id))`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Optional, Tuple

import ml_collections
import numpy as np


def augment_config() -> ml_collections.ConfigDict:
    a = ml_collections.ConfigDict()
    # Random resized crop: fraction of the frame's area kept, 0 < lo <= hi <= 1 (paper 0.08-0.3).
    a.crop_scale = (0.08, 0.3)
    # Crop aspect ratio range (w/h), 0 < lo <= hi; sampled log-uniformly.
    a.crop_ratio = (3 / 4, 4 / 3)
    # Probability in [0, 1] of colour jitter.
    a.jitter_p = 0.8
    # Jitter strengths >= 0: brightness/contrast/saturation factors in [1-x, 1+x]; hue in [-h, h], h <= 0.5.
    a.brightness = 0.4
    a.contrast = 0.4
    a.saturation = 0.2
    a.hue = 0.1
    # Probability in [0, 1] of converting to grayscale (3 equal channels).
    a.grayscale_p = 0.2
    # Gaussian blur σ range in pixels, 0 < lo <= hi; applied with probability blur_p in [0, 1].
    a.blur_sigma = (0.1, 2.0)
    a.blur_p = 1.0
    # Probability in [0, 1] of a horizontal flip.
    a.flip_p = 0.5
    # Frames kept after augmentation (>= 1), uniformly spaced.
    a.keep_frames = 2
    # Base seed; each record's seed is record_seed(seed, record id).
    a.seed = 0
    return a


def _fail(key: str, value, rule: str):
    raise ValueError(f"config augment.{key}={value!r}: expected {rule}")


def check_augment_config(cfg) -> None:
    """Raises ValueError naming the augment.* key of an invalid value."""
    lo, hi = cfg.crop_scale
    if not 0 < lo <= hi <= 1:
        _fail("crop_scale", tuple(cfg.crop_scale), "0 < lo <= hi <= 1")
    lo, hi = cfg.crop_ratio
    if not 0 < lo <= hi:
        _fail("crop_ratio", tuple(cfg.crop_ratio), "0 < lo <= hi")
    for key in ("jitter_p", "grayscale_p", "blur_p", "flip_p"):
        if not 0 <= cfg[key] <= 1:
            _fail(key, cfg[key], "a probability in [0, 1]")
    for key in ("brightness", "contrast", "saturation"):
        if cfg[key] < 0:
            _fail(key, cfg[key], ">= 0")
    if not 0 <= cfg.hue <= 0.5:
        _fail("hue", cfg.hue, "in [0, 0.5]")
    lo, hi = cfg.blur_sigma
    if not 0 < lo <= hi:
        _fail("blur_sigma", tuple(cfg.blur_sigma), "0 < lo <= hi")
    if int(cfg.keep_frames) < 1:
        _fail("keep_frames", cfg.keep_frames, "an int >= 1")


def record_seed(base_seed: int, record_id: str) -> int:
    """A seed from (base seed, record id), stable across processes and Python runs."""
    digest = hashlib.sha256(f"{int(base_seed)}/{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    crop: Tuple[int, int, int, int]  # top, left, height, width
    jitter: Optional[Tuple[Tuple[str, float], ...]]  # (op, factor) in application order
    grayscale: bool
    blur_sigma: Optional[float]
    flip: bool

    def to_json(self) -> dict:
        return {"crop": list(self.crop), "jitter": None if self.jitter is None else [list(j) for j in self.jitter],
                "grayscale": self.grayscale, "blur_sigma": self.blur_sigma, "flip": self.flip}


def _sample_crop(rng, height: int, width: int, cfg) -> Tuple[int, int, int, int]:
    """torchvision RandomResizedCrop: 10 tries of (area, ratio); else the centre crop clamped
    to the ratio range."""
    area = height * width
    log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*cfg.crop_scale)
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    ratio = width / height
    if ratio < cfg.crop_ratio[0]:
        w, h = width, int(round(width / cfg.crop_ratio[0]))
    elif ratio > cfg.crop_ratio[1]:
        h, w = height, int(round(height * cfg.crop_ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_params(rng: np.random.Generator, height: int, width: int, cfg) -> AugmentParams:
    check_augment_config(cfg)
    crop = _sample_crop(rng, height, width, cfg)
    jitter = None
    if rng.uniform() < cfg.jitter_p:
        ops = []
        for name in rng.permutation(["brightness", "contrast", "saturation", "hue"]):
            strength = float(cfg[str(name)])
            if strength == 0:
                continue
            lo, hi = (-strength, strength) if name == "hue" else (max(0.0, 1 - strength), 1 + strength)
            ops.append((str(name), float(rng.uniform(lo, hi))))
        jitter = tuple(ops)
    grayscale = bool(rng.uniform() < cfg.grayscale_p)
    blur = float(rng.uniform(*cfg.blur_sigma)) if rng.uniform() < cfg.blur_p else None
    flip = bool(rng.uniform() < cfg.flip_p)
    return AugmentParams(crop, jitter, grayscale, blur, flip)


# ----------------------------------------------------------------------------- the operations
def _resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """[N, h, w, C] float -> [N, height, width, C], half-pixel centres (align_corners=False)."""
    def coords(out, size):
        c = (np.arange(out) + 0.5) * size / out - 0.5
        c = np.clip(c, 0, size - 1)
        lo = np.floor(c).astype(int)
        hi = np.minimum(lo + 1, size - 1)
        return lo, hi, c - lo

    y0, y1, fy = coords(height, x.shape[1])
    x0, x1, fx = coords(width, x.shape[2])
    top = x[:, y0] * (1 - fy)[None, :, None, None] + x[:, y1] * fy[None, :, None, None]
    return top[:, :, x0] * (1 - fx)[None, None, :, None] + top[:, :, x1] * fx[None, None, :, None]


def _gray(x: np.ndarray) -> np.ndarray:
    return (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]


def _hue_shift(x: np.ndarray, shift: float) -> np.ndarray:
    """RGB in [0, 1] -> hue rotated by `shift` turns (HSV round trip)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    maxc, minc = x.max(-1), x.min(-1)
    v, delta = maxc, maxc - minc
    s = np.where(maxc > 0, delta / np.maximum(maxc, 1e-12), 0)
    safe = np.maximum(delta, 1e-12)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    h = (h + shift) % 1.0
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(int) % 6
    out_r = np.choose(i, [v, q, p, p, t, v])
    out_g = np.choose(i, [t, v, v, q, p, p])
    out_b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([out_r, out_g, out_b], -1)


def _jitter(x: np.ndarray, op: str, factor: float) -> np.ndarray:
    """x in [0, 1]; torchvision's blend definitions, clipped after every op."""
    if op == "brightness":
        out = x * factor
    elif op == "contrast":
        mean = _gray(x).mean(axis=(1, 2, 3), keepdims=True)  # per frame
        out = factor * x + (1 - factor) * mean
    elif op == "saturation":
        out = factor * x + (1 - factor) * _gray(x)
    else:
        out = _hue_shift(x, factor)
    return np.clip(out, 0.0, 1.0)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian, kernel 2·ceil(3σ)+1 taps, reflect padding."""
    radius = int(math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (1, 2):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="reflect") if x.shape[axis] > radius else np.pad(x, pad, mode="edge")
        out = np.zeros_like(x)
        for k, w in enumerate(taps):
            out += w * np.take(padded, np.arange(k, k + x.shape[axis]), axis=axis)
        x = out
    return x


def apply_params(frames: np.ndarray, params: AugmentParams) -> np.ndarray:
    """uint8 [F, H, W, 3] -> uint8 [F, H, W, 3], the same parameters on every frame."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got shape {frames.shape}")
    height, width = frames.shape[1:3]
    top, left, h, w = params.crop
    x = frames[:, top: top + h, left: left + w].astype(np.float64) / 255.0  # f64: exact ties vs references
    x = _resize_bilinear(x, height, width)
    for op, factor in params.jitter or ():
        x = _jitter(x, op, factor)
    if params.grayscale:
        x = np.repeat(_gray(x), 3, axis=-1)
    if params.blur_sigma is not None:
        x = _blur(x, params.blur_sigma)
    if params.flip:
        x = x[:, :, ::-1]
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def kept_indices(num_frames: int, keep: int) -> np.ndarray:
    return np.round(np.linspace(0, num_frames - 1, keep)).astype(int)


def augment_video(frames: np.ndarray, cfg, *, seed: int) -> Tuple[np.ndarray, AugmentParams]:
    """-> (uint8 [keep_frames, H, W, 3], the parameters drawn with default_rng(seed))."""
    frames = np.asarray(frames)
    kept = frames[kept_indices(frames.shape[0], int(cfg.keep_frames))]
    params = sample_params(np.random.default_rng(seed), frames.shape[1], frames.shape[2], cfg)
    return apply_params(kept, params), params
