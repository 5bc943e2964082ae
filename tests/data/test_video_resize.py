"""Frame resize policies (RESIZE_MODES) against transformers' own PIL image processors, bit for bit."""

import os

import numpy as np
import pytest
from PIL import Image

from leanpo_jax.data import synthetic, video


def _processor(name):
    import transformers  # pylint: disable=import-outside-toplevel
    # transformers 5 names the PIL backend `...Pil`; older versions only have the PIL one.
    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


def _chw_to_hwc(pixel_values):
    return np.asarray(pixel_values).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("h, w", [(48, 80), (80, 48), (47, 81), (81, 47), (33, 33), (20, 50), (32, 90)])
def test_shortest_edge_crop_matches_clip_image_processor(h, w):
    """CLIP's processor (shortest_edge 32, crop 32 x 32, no rescale / normalise) gives the same
    uint8 pixels. Odd sizes exercise int(S * long / short) and the (h' - S) // 2 offsets;
    20 x 50 and 33 x 33 upsample."""
    frames = np.random.default_rng(h * 1000 + w).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    proc = _processor("CLIPImageProcessor")(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                            do_normalize=False, do_rescale=False)
    ref = _chw_to_hwc(proc(list(frames), return_tensors="np")["pixel_values"])
    mine = video.resize_frames(frames, 32, resize="shortest_edge_crop")
    assert ref.dtype == np.uint8 and mine.dtype == np.uint8 and mine.shape == ref.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(mine, ref)
    # A (S, S) tuple is the same policy.
    np.testing.assert_array_equal(video.resize_frames(frames, (32, 32), "shortest_edge_crop"), ref)


def test_shortest_edge_crop_follows_transformers_formulas():
    """The reference computed with PIL from the formulas read in transformers' image_transforms
    (get_resize_output_image_size default_to_square=False; center_crop offsets)."""
    frame = np.random.default_rng(1).integers(0, 256, (50, 123, 3), dtype=np.uint8)
    s = 40
    new_w = int(s * 123 / 50)  # the long side, truncated: 98
    assert video.shortest_edge_size(50, 123, s) == (s, new_w)
    assert video.shortest_edge_size(123, 50, s) == (new_w, s)
    assert video.shortest_edge_size(64, 64, s) == (s, s)
    resized = np.asarray(Image.fromarray(frame).resize((new_w, s), resample=Image.Resampling.BICUBIC))
    left = (new_w - s) // 2
    np.testing.assert_array_equal(video.resize_frames(frame[None], s, "shortest_edge_crop")[0],
                                  resized[:, left:left + s])


@pytest.mark.parametrize("size", [(32, 48), (48, 32), (17, 100)])
def test_direct_resize_non_square_matches_siglip_image_processor(size):
    h, w = size
    frames = np.random.default_rng(7).integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)
    proc = _processor("SiglipImageProcessor")(size={"height": h, "width": w}, do_normalize=False,
                                              do_rescale=False)
    ref = _chw_to_hwc(proc(list(frames), return_tensors="np")["pixel_values"])
    mine = video.resize_frames(frames, (h, w))
    assert mine.shape == (2, h, w, 3) and mine.dtype == np.uint8
    np.testing.assert_array_equal(mine, ref)
    pil = Image.fromarray(frames[0]).resize((w, h), resample=Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(mine[0], np.asarray(pil))
    # An int S is (S, S), the default mode is "direct", and a frame already H x W is returned as is.
    np.testing.assert_array_equal(video.resize_frames(frames, 40),
                                  video.resize_frames(frames, (40, 40), "direct"))
    assert video.resize_frames(mine, (h, w)) is mine


def test_read_video_with_both_policies(tmp_path):
    """read_video's resize equals resize_frames of the native-size decode, for a file and a folder."""
    clip = synthetic.render_frames(synthetic.sample_attributes(0, 0), 64, 12)  # drawn 64 x 64
    clip = np.concatenate([clip, clip[:, :, :32]], axis=2)  # 64 x 96: non-square
    path = str(tmp_path / "wide.mp4")
    synthetic.write_mp4(path, clip, fps=8)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"{i}.png")
    for src in (path, str(folder)):
        native, info = video.read_video(src, 6, image_size=(64, 96))  # no resize: the decoded pixels
        if src == str(folder):  # png is lossless
            np.testing.assert_array_equal(native, clip[info.indices])
        for image_size, resize, shape in [((40, 24), "direct", (40, 24)),
                                          (32, "shortest_edge_crop", (32, 32)), (48, "direct", (48, 48))]:
            frames, info = video.read_video(src, 6, image_size=image_size, resize=resize)
            assert frames.shape == (6, *shape, 3) and info.num_source_frames == 12, (src, resize)
            np.testing.assert_array_equal(frames, video.resize_frames(native, image_size, resize))


def test_bad_policy_values_are_value_errors(tmp_path):
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"resize='crop'.*direct.*shortest_edge_crop"):
        video.resize_frames(frames, 4, resize="crop")
    with pytest.raises(ValueError, match="square"):
        video.resize_frames(frames, (4, 6), resize="shortest_edge_crop")
    for bad in [0, (4,), (4, 0), (4.0, 4), "4", True, None]:
        with pytest.raises(ValueError, match="image_size"):
            video.resize_frames(frames, bad)
    # A config error comes before the path is looked at (no VideoError for a missing file).
    with pytest.raises(ValueError, match="resize='bicubic'"):
        video.read_video(str(tmp_path / "missing.mp4"), 4, image_size=8, resize="bicubic")
    assert video.RESIZE_MODES == ("direct", "shortest_edge_crop")
