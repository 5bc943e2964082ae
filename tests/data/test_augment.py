"""A(V): one augmentation shared by every frame, keep_frames uniform frames kept, seeded per record,
crop areas/ratios and probabilities as configured, each operation against a NumPy reference."""

import math

import numpy as np
import pytest

from leanpo_jax.data import augment


def cfg(**changes):
    c = augment.augment_config()
    for k, v in changes.items():
        c[k] = v
    return c


# Every random operation off and a full-frame crop (square frames): augment_video only selects frames.
NOTHING = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=0.0,
               crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))


def video(frames=8, size=32, seed=0, width=None):
    shape = (frames, size, width or size, 3)
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def params(**changes):
    base = dict(crop=(0, 0, 16, 16), jitter=None, grayscale=False, blur_sigma=None, flip=False)
    return augment.AugmentParams(**{**base, **changes})


def test_same_augmentation_on_every_frame():
    frames = video()
    out, p = augment.augment_video(np.repeat(frames[:1], 8, axis=0), cfg(), seed=5)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], out[1])
    # Every operation on, distinct frames: each frame augmented alone equals the stacked result.
    c = cfg(jitter_p=1.0, grayscale_p=0.0, flip_p=1.0)
    out, p = augment.augment_video(frames, c, seed=5)
    assert p.jitter is not None and len(p.jitter) == 4 and p.blur_sigma is not None and p.flip
    per_frame = [augment.apply_params(frames[i:i + 1], p)[0] for i in (0, 7)]
    np.testing.assert_array_equal(out, np.stack(per_frame))
    full = augment.apply_params(frames, p)
    np.testing.assert_array_equal(full[[0, 7]], out)  # selecting before == selecting after


@pytest.mark.parametrize("num, keep, want", [(8, 2, [0, 7]), (10, 3, [0, 4, 9]), (7, 4, [0, 2, 4, 6]),
                                             (1, 2, [0, 0]), (3, 5, [0, 0, 1, 2, 2])])
def test_keep_frames_at_uniform_indices(num, keep, want):
    np.testing.assert_array_equal(augment.kept_indices(num, keep), want)
    frames = video(frames=num, size=12)
    out, _ = augment.augment_video(frames, cfg(keep_frames=keep, **NOTHING), seed=1)
    assert out.shape == (keep, 12, 12, 3)
    np.testing.assert_array_equal(out, frames[want])  # short videos repeat frames, order kept


def test_deterministic_per_seed_and_record():
    frames = video()
    seed = augment.record_seed(0, "rec-1")
    a, pa = augment.augment_video(frames, cfg(), seed=seed)
    b, pb = augment.augment_video(frames, cfg(), seed=seed)
    c, pc = augment.augment_video(frames, cfg(), seed=augment.record_seed(0, "rec-2"))
    assert a.tobytes() == b.tobytes() and pa == pb
    assert a.tobytes() != c.tobytes() and pa != pc
    assert augment.record_seed(0, "rec-1") != augment.record_seed(1, "rec-1")
    # A fixed value: SHA-256 based, so the same in every process and Python run (hash() is salted).
    assert augment.record_seed(0, "rec-1") == int.from_bytes(
        __import__("hashlib").sha256(b"0/rec-1").digest()[:8], "little") & (2**63 - 1)
    assert pa.to_json()["crop"] == list(pa.crop)


def test_crop_areas_ratios_and_probabilities_over_many_seeds():
    c, n, h, w = cfg(), 600, 96, 128
    draws = [augment.sample_params(np.random.default_rng(s), h, w, c) for s in range(n)]
    for p in draws:
        top, left, ch, cw = p.crop
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
        # Each side is a real side rounded: some sides within 0.5 of (ch, cw) have an area and a
        # ratio in range.
        assert (ch - 0.5) * (cw - 0.5) <= 0.3 * h * w and (ch + 0.5) * (cw + 0.5) >= 0.08 * h * w, p.crop
        assert (cw - 0.5) / (ch + 0.5) <= 4 / 3 and (cw + 0.5) / (ch - 0.5) >= 3 / 4, p.crop
        assert 0.1 <= p.blur_sigma <= 2.0
    for rate, got in ((0.8, np.mean([p.jitter is not None for p in draws])),
                      (0.2, np.mean([p.grayscale for p in draws])),
                      (0.5, np.mean([p.flip for p in draws]))):
        assert abs(got - rate) < 4 * math.sqrt(rate * (1 - rate) / n), (rate, got)
    jittered = [p.jitter for p in draws if p.jitter is not None]
    assert len({tuple(op for op, _ in j) for j in jittered}) == 24  # every order of the four occurs
    for j in jittered:
        f = dict(j)
        assert 0.6 <= f["brightness"] <= 1.4 and 0.6 <= f["contrast"] <= 1.4
        assert 0.8 <= f["saturation"] <= 1.2 and -0.1 <= f["hue"] <= 0.1


def test_crop_fallback_when_no_try_fits():
    # A 4 x 400 strip: no 8-30 % crop with ratio in [3/4, 4/3] fits, so torchvision's fallback,
    # the central crop with the ratio clamped to 4/3: height 4, width round(4 * 4/3) = 5.
    p = augment.sample_params(np.random.default_rng(0), 4, 400, cfg())
    assert p.crop == (0, (400 - 5) // 2, 4, 5)


def test_flip_mirrors_a_hand_made_image():
    img = np.zeros((1, 3, 4, 3), np.uint8)
    img[0, :, 0] = (255, 0, 0)  # red left column, green top-right pixel
    img[0, 0, 3] = (0, 255, 0)
    c = cfg(keep_frames=1, **{**NOTHING, "flip_p": 1.0, "crop_ratio": (4 / 3, 4 / 3)})  # full 3 x 4 crop
    out, p = augment.augment_video(img, c, seed=0)
    want = np.zeros_like(img)
    want[0, :, 3] = (255, 0, 0)
    want[0, 0, 0] = (0, 255, 0)
    assert p.flip and p.jitter is None and p.blur_sigma is None and not p.grayscale
    np.testing.assert_array_equal(out, want)


def test_single_operations_against_references():
    frames = video(frames=2, size=16, seed=1)
    np.testing.assert_array_equal(augment.apply_params(frames, params()), frames)  # identity
    gray = augment.apply_params(frames, params(grayscale=True))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    luma = frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray[..., 0] - luma).max() <= 0.5 + 1e-9  # ITU-R 601 luma, rounded
    bright = augment.apply_params(frames, params(jitter=(("brightness", 1.3),)))
    want = np.clip(np.round(frames.astype(np.float64) / 255 * 1.3 * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(bright, want)
    sat0 = augment.apply_params(frames, params(jitter=(("saturation", 0.0),)))
    np.testing.assert_array_equal(sat0, gray)  # saturation 0 blends fully to luma
    con0 = augment.apply_params(frames, params(jitter=(("contrast", 0.0),)))
    for i in range(2):  # contrast 0: every pixel is that frame's mean luma
        assert np.abs(con0[i] - luma[i].mean()).max() <= 0.5 + 1e-9
    hue0 = augment.apply_params(frames, params(jitter=(("hue", 0.0),)))
    np.testing.assert_array_equal(hue0, frames)  # float64 HSV round trip is exact
    red = np.zeros((1, 2, 2, 3), np.uint8)
    red[..., 0] = 255
    green = augment.apply_params(red, params(crop=(0, 0, 2, 2), jitter=(("hue", 1 / 3),)))
    np.testing.assert_array_equal(green[..., 1], 255)  # a third of a turn: red -> green
    assert green[..., [0, 2]].max() == 0


def test_blur_and_zoom():
    frames = video(frames=2, size=16, seed=1)
    np.testing.assert_array_equal(augment.apply_params(frames, params(blur_sigma=0.1)), frames)
    blurred = augment.apply_params(frames, params(blur_sigma=2.0))
    assert blurred.astype(float).var() < 0.3 * frames.astype(float).var()
    flat = np.full((1, 16, 16, 3), 77, np.uint8)  # reflect padding keeps a flat image flat
    np.testing.assert_array_equal(augment.apply_params(flat, params(blur_sigma=2.0)), flat)
    tiny = augment.apply_params(frames[:, :3, :3], params(crop=(0, 0, 3, 3), blur_sigma=2.0))
    assert tiny.shape == (2, 3, 3, 3)  # pad wider than the frame: repeated reflection
    # A 2 x 2 top-left crop of a 2 x 2 checker resized to 4 x 4: bilinear, half-pixel centres.
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[0, 0, 1] = img[0, 1, 0] = 200
    big = np.zeros((1, 4, 4, 3), np.uint8)
    big[0, :2, :2] = img[0]
    zoom = augment.apply_params(big, params(crop=(0, 0, 2, 2)))[0, :, :, 0]
    row = np.array([0, 0.25, 0.75, 1.0])  # weight of the second source column per output column
    want = np.outer(1 - row, row) * 200 + np.outer(row, 1 - row) * 200
    np.testing.assert_array_equal(zoom, np.round(want).astype(np.uint8))


@pytest.mark.parametrize("key, value", [("crop_scale", (0.5, 0.2)), ("crop_scale", (0.1, 1.5)),
                                        ("crop_scale", 0.3), ("crop_ratio", (0.0, 1.0)),
                                        ("jitter_p", 1.5), ("flip_p", -0.1), ("brightness", -0.4),
                                        ("hue", 0.7), ("blur_sigma", (0.0, 1.0)), ("keep_frames", 0),
                                        ("keep_frames", 1.5), ("seed", "x")])
def test_bad_config_names_the_key(key, value):
    bad = {**augment.augment_config().to_dict(), key: value}  # a dict: ConfigDict would refuse a new type
    with pytest.raises(ValueError, match=rf"^augment\.{key}="):
        augment.augment_video(video(), bad, seed=0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        augment.augment_video(video().astype(np.float32), cfg(), seed=0)
    with pytest.raises(ValueError, match="outside"):
        augment.apply_params(video(size=8), params(crop=(0, 0, 16, 16)))
    assert str(pytest.raises(ValueError, augment.check_augment_config, cfg(crop_scale=(0.5, 0.2))).value) == \
        "augment.crop_scale=(0.5, 0.2): expected 0 < lo <= hi <= 1"
