"""A(V): one augmentation shared by every frame, 2 frames kept, seeded, crop areas in range."""

import math

import numpy as np
import pytest

from leanpo_jax.data import augment


def cfg(**changes):
    c = augment.augment_config()
    for k, v in changes.items():
        c[k] = v
    return c


NOTHING = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=0.0, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))


def video(frames=8, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size, 3)).astype(np.uint8)


def test_same_augmentation_on_every_frame_and_two_uniform_frames_kept():
    frames = video()
    same = np.repeat(frames[:1], 8, axis=0)
    out, params = augment.augment_video(same, cfg(), seed=5)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], out[1])
    out, params = augment.augment_video(frames, cfg(), seed=5)
    per_frame = [augment.apply_params(frames[i: i + 1], params)[0] for i in (0, 7)]
    np.testing.assert_array_equal(out, np.stack(per_frame))
    np.testing.assert_array_equal(augment.kept_indices(8, 2), [0, 7])
    np.testing.assert_array_equal(augment.kept_indices(1, 2), [0, 0])  # short video: repeated


def test_deterministic_per_seed_and_record():
    frames = video()
    a, pa = augment.augment_video(frames, cfg(), seed=augment.record_seed(0, "rec-1"))
    b, pb = augment.augment_video(frames, cfg(), seed=augment.record_seed(0, "rec-1"))
    c, pc = augment.augment_video(frames, cfg(), seed=augment.record_seed(0, "rec-2"))
    np.testing.assert_array_equal(a, b)
    assert pa == pb and pa != pc
    assert augment.record_seed(0, "rec-1") == augment.record_seed(0, "rec-1") != augment.record_seed(1, "rec-1")


def test_crop_areas_ratios_and_probabilities_over_many_seeds():
    c = cfg()
    n, h, w = 600, 96, 128
    draws = [augment.sample_params(np.random.default_rng(s), h, w, c) for s in range(n)]
    for p in draws:
        top, left, ch, cw = p.crop
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
        # Integer rounding of sides moves the area by at most a side's worth.
        assert 0.08 * h * w - (ch + cw) <= ch * cw <= 0.3 * h * w + (ch + cw)
        assert 0.75 - 2 / min(ch, cw) <= cw / ch <= 4 / 3 + 2 / min(ch, cw)
    for rate, got in ((0.8, np.mean([p.jitter is not None for p in draws])),
                      (0.2, np.mean([p.grayscale for p in draws])),
                      (0.5, np.mean([p.flip for p in draws]))):
        assert abs(got - rate) < 4 * math.sqrt(rate * (1 - rate) / n), (rate, got)
    sigmas = [p.blur_sigma for p in draws]
    assert min(sigmas) >= 0.1 and max(sigmas) <= 2.0


def test_single_operations():
    frames = video(frames=2, size=16, seed=1)
    base = augment.AugmentParams((0, 0, 16, 16), None, False, None, False)
    np.testing.assert_array_equal(augment.apply_params(frames, base), frames)  # identity crop
    flipped = augment.apply_params(frames, augment.AugmentParams((0, 0, 16, 16), None, False, None, True))
    np.testing.assert_array_equal(flipped, frames[:, :, ::-1])
    gray = augment.apply_params(frames, augment.AugmentParams((0, 0, 16, 16), None, True, None, False))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    bright = augment.apply_params(frames, augment.AugmentParams((0, 0, 16, 16), (("brightness", 1.3),), False, None, False))
    want = np.clip(np.round(frames.astype(np.float64) / 255 * 1.3 * 255), 0, 255)
    np.testing.assert_array_equal(bright, want.astype(np.uint8))
    sharp = augment.apply_params(frames, augment.AugmentParams((0, 0, 16, 16), None, False, 0.1, False))
    np.testing.assert_array_equal(sharp, frames)  # σ 0.1: the side taps weigh ~1e-22
    blurred = augment.apply_params(frames, augment.AugmentParams((0, 0, 16, 16), None, False, 2.0, False))
    assert blurred.astype(float).var() < 0.3 * frames.astype(float).var()
    hue = augment.apply_params(frames, augment.AugmentParams((0, 0, 16, 16), (("hue", 0.0),), False, None, False))
    assert np.abs(hue.astype(int) - frames.astype(int)).max() <= 1  # HSV round trip
    zoom = augment.apply_params(frames, augment.AugmentParams((4, 4, 8, 8), None, False, None, False))
    assert zoom.shape == frames.shape


@pytest.mark.parametrize("key, value", [("crop_scale", (0.5, 0.2)), ("jitter_p", 1.5), ("hue", 0.7),
                                        ("blur_sigma", (0.0, 1.0)), ("keep_frames", 0)])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=f"augment.{key}"):
        augment.augment_video(video(), cfg(**{key: value}), seed=0)
