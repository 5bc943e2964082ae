"""Video decoding, sampling, resize and normalisation on real files (all written here, offline)."""

import os

import av
import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from leanpo_jax.data import records, synthetic, video

T, H, W = 30, 48, 64  # the textured test clip: non-square, so every read also resizes


def _clip(t=T, h=H, w=W):
    """Smooth colour waves plus a moving white square: compresses well, differs per frame."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(t):
        f = np.stack([128 + 90 * np.sin(x / 9 + i / 5), 128 + 90 * np.cos(y / 7),
                      np.full_like(x, 60 + 4 * i)], -1)
        f[12:24, 4 + i:16 + i] = 250
        out.append(f)
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


# file name -> (imageio pyav codec, mean-abs-error bound vs the drawn clip; mpeg4 at its default
# bitrate is the noisiest codec here)
FORMATS = {"clip.mp4": ("libx264", 6), "clip.webm": ("libvpx", 6), "clip_vp9.webm": ("libvpx-vp9", 6),
           "clip.mkv": ("libx264", 6), "clip.mov": ("libx264", 6), "clip.avi": ("mpeg4", 14)}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("video_media"))
    clip = _clip()
    for name, (codec, _) in FORMATS.items():
        iio.imwrite(os.path.join(root, name), clip, plugin="pyav", codec=codec, fps=10)
    iio.imwrite(os.path.join(root, "clip.gif"), clip[:12], extension=".gif", duration=100, loop=0)
    for ext in ("png", "jpg"):
        folder = os.path.join(root, f"frames_{ext}")
        os.makedirs(folder)
        for i in range(12):  # frame_1 .. frame_12: natural order differs from string order
            Image.fromarray(clip[i]).save(os.path.join(folder, f"frame_{i + 1}.{ext}"), quality=95)
        with open(os.path.join(folder, "notes.txt"), "w") as f:
            f.write("not a frame")
    synthetic.generate(os.path.join(root, "syn"), 2, seed=3)
    return root, clip


def _rows(root):
    import json  # pylint: disable=import-outside-toplevel
    with open(os.path.join(root, "syn", "triplets.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_uniform_indices():
    np.testing.assert_array_equal(video.uniform_indices(5, 8), [0, 0, 1, 1, 2, 2, 3, 4])  # n < F repeats
    np.testing.assert_array_equal(video.uniform_indices(8, 8), np.arange(8))
    for n, f in [(100, 32), (64, 64), (129, 16), (7, 3)]:
        idx = video.uniform_indices(n, f)
        np.testing.assert_array_equal(idx, np.linspace(0, n - 1, f, dtype=int))  # LLaVA's rule
        assert idx.dtype == np.int64 and idx[0] == 0 and idx[-1] == n - 1
        assert len(np.unique(idx)) == f if n >= f else True
    np.testing.assert_array_equal(video.uniform_indices(1, 4), [0, 0, 0, 0])
    with pytest.raises(ValueError):
        video.uniform_indices(0, 4)


def test_fps_sampling_is_capped_and_static():
    # 24 frames at 8 fps, 2 frames/s -> every 4th: 6 indices, stretched to F = 8 by repeats.
    idx = video.sample_indices(24, 8, 8.0, fps_sampling=2.0)
    np.testing.assert_array_equal(np.unique(idx), [0, 4, 8, 12, 16, 20])
    np.testing.assert_array_equal(idx, np.array([0, 4, 8, 12, 16, 20])[video.uniform_indices(6, 8)])
    # 8 frames/s -> 24 candidates > cap 8: LLaVA-Video falls back to uniform.
    np.testing.assert_array_equal(video.sample_indices(24, 8, 8.0, fps_sampling=8.0),
                                  video.uniform_indices(24, 8))
    # A cap below F: uniform cap frames, repeated up to F.
    idx = video.sample_indices(24, 8, 8.0, fps_sampling=8.0, max_frames=4)
    np.testing.assert_array_equal(idx, video.uniform_indices(24, 4)[video.uniform_indices(4, 8)])
    with pytest.raises(ValueError, match="max_frames"):
        video.sample_indices(24, 8, 8.0, fps_sampling=1.0, max_frames=16)


def _qwen_vl_utils_indices(n, video_fps, rate=2.0, min_frames=4):
    """qwen-vl-utils' `smart_nframes` + `torch.linspace(0, n-1, nframes).round().long()`, spelt
    out here (FRAME_FACTOR 2, FPS_MAX_FRAMES 768) with torch as the reference's arithmetic."""
    torch = pytest.importorskip("torch")
    lo = int(np.ceil(min_frames / 2) * 2)
    hi = int(np.floor(min(768, n) / 2) * 2)
    count = int(np.floor(min(min(max(n / video_fps * rate, lo), hi), n) / 2) * 2)
    return torch.linspace(0, n - 1, count).round().long().numpy()


@pytest.mark.parametrize("n,video_fps,num_frames", [
    (300, 30.0, 32),  # 10 s at 2 fps: 20 frames, stretched to 32 by repeats
    (300, 30.0, 16),  # 20 frames over the cap 16: 16 of them, uniformly (lmms-eval)
    (3001, 29.97, 64),  # ~100 s: 200 frames -> 64
    (5, 30.0, 8),  # 0.17 s: at least min_frames 4
    (97, 24.0, 8),  # 4.04 s: 8.08 -> 8 frames
])
def test_qwen_fps_rule_is_qwen_vl_utils_then_the_lmms_eval_cap(n, video_fps, num_frames):
    qwen = _qwen_vl_utils_indices(n, video_fps)
    assert video.qwen_fps_count(n, video_fps, 2.0, 4) == len(qwen)
    capped = qwen[np.linspace(0, len(qwen) - 1, num_frames, dtype=int)] if len(qwen) > num_frames else qwen
    got = video.sample_indices(n, num_frames, video_fps, fps_sampling=2.0, fps_rule="qwen", frame_sampling="index")
    np.testing.assert_array_equal(got, capped[video.uniform_indices(len(capped), num_frames)])
    assert got.shape == (num_frames,)


def test_qwen_fps_count_edges():
    assert video.qwen_fps_count(1, 30.0, 2.0, 4) == 1  # a still: one frame (qwen-vl-utils refuses it)
    assert video.qwen_fps_count(3, 30.0, 2.0, 4) == 2  # fewer frames than min_frames: even, <= n
    assert video.qwen_fps_count(3000, 30.0, 2.0, 5) == 200 and video.qwen_fps_count(30, 30.0, 2.0, 5) == 6
    assert video.qwen_fps_count(100_000, 30.0, 2.0, 4) == 768
    with pytest.raises(ValueError, match="fps_rule='nope'"):
        video.sample_indices(30, 8, 30.0, fps_sampling=2.0, fps_rule="nope")


def test_synthetic_mp4_frames_info_and_drawn_content(media):
    root, _ = media
    for row in _rows(root):
        path = os.path.join(root, "syn", row["video"])
        frames, info = video.read_video(path, 16, image_size=64)
        assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
        assert (info.num_source_frames, info.fps, info.duration_s, info.repeated) == (24, 8.0, 3.0, False)
        np.testing.assert_array_equal(info.indices, video.uniform_indices(24, 16))
        np.testing.assert_allclose(info.timestamps_s, info.indices / 8.0)
        attrs = synthetic.sample_attributes(3, int(row["id"].split("-")[1]))
        drawn = synthetic.render_frames(attrs, 64, 24)[info.indices]
        assert np.abs(frames.astype(int) - drawn).mean() < 5.0  # lossy: 4:2:0 chroma, YUV rounding
        # PyAV decode agrees with imageio's pyav plugin (the same FFmpeg underneath).
        ref = iio.imread(path, plugin="pyav", index=None)
        assert np.abs(frames.astype(int) - ref[info.indices]).max() <= 2
        # More frames than the video has: indices repeat and the flag says so.
        frames, info = video.read_video(path, 32, image_size=64)
        assert frames.shape[0] == 32 and info.repeated and len(np.unique(info.indices)) == 24
        np.testing.assert_array_equal(frames[0], frames[1])  # index 0 twice


def test_fps_sampling_on_a_file(media):
    root, _ = media
    path = os.path.join(root, "syn", _rows(root)[0]["video"])
    frames, info = video.read_video(path, 8, image_size=32, fps_sampling=2.0)
    np.testing.assert_array_equal(np.unique(info.indices), [0, 4, 8, 12, 16, 20])
    assert frames.shape == (8, 32, 32, 3) and info.repeated
    np.testing.assert_allclose(info.timestamps_s, info.indices / 8.0)
    assert info.sampled_fps == 8 / 3.0  # 8 frames over the 3 s clip
    # Qwen's rule on the same 24-frame, 3 s clip: 6 frames at round(linspace(0, 23, 6)).
    _, info = video.read_video(path, 8, image_size=32, fps_sampling=2.0, fps_rule="qwen")
    np.testing.assert_array_equal(np.unique(info.indices), [0, 5, 9, 14, 18, 23])


@pytest.mark.parametrize("name", sorted(FORMATS) + ["clip.gif"])
def test_formats_decode_like_the_drawn_clip(media, name):
    root, clip = media
    path = os.path.join(root, name)
    n = 12 if name.endswith(".gif") else T
    full, info = video.read_video(path, n, image_size=W)  # F = n: every frame once
    assert info.num_source_frames == n and not info.repeated
    assert info.fps == pytest.approx(10.0, rel=0.05) and info.duration_s == pytest.approx(n / info.fps)
    np.testing.assert_array_equal(info.indices, np.arange(n))
    expected = video.resize_frames(clip[:n], W)
    bound = FORMATS.get(name, (None, 3))[1]
    assert np.abs(full.astype(int) - expected).mean() < bound, name
    ref = video.resize_frames(iio.imread(path, plugin="pyav", index=None), W)
    assert np.abs(full.astype(int) - ref).max() <= 2, name  # same decoder, same pixels
    some, info = video.read_video(path, 5, image_size=W)
    np.testing.assert_array_equal(some, full[info.indices])  # partial decode = full decode


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_frame_folders_sorted_naturally(media, ext):
    root, clip = media
    frames, info = video.read_video(os.path.join(root, f"frames_{ext}"), 12, image_size=W, folder_fps=2.0)
    assert info.num_source_frames == 12 and info.fps == 2.0 and info.duration_s == 6.0
    expected = video.resize_frames(clip[:12], W)
    err = np.abs(frames.astype(int) - expected)
    assert (err.max() == 0) if ext == "png" else (err.mean() < 3), ext  # png is lossless
    frames4, info4 = video.read_video(os.path.join(root, f"frames_{ext}"), 4, image_size=W)
    np.testing.assert_array_equal(info4.indices, [0, 3, 7, 11])
    np.testing.assert_array_equal(frames4, frames[info4.indices])


class _CountingContainer:
    """Wraps a PyAV input container, counting seeks and optionally landing them `shift_s` late."""

    def __init__(self, container, log, shift_s):
        self._c, self._log, self._shift_s = container, log, shift_s

    def seek(self, offset, **kwargs):
        self._log.append(offset)
        if self._shift_s and kwargs.get("stream") is not None:
            offset += int(self._shift_s / kwargs["stream"].time_base)
        return self._c.seek(offset, **kwargs)

    def __getattr__(self, name):
        return getattr(self._c, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.close()


@pytest.mark.parametrize("shift_s", [0.0, 2.0], ids=["exact", "overshooting-seek"])
def test_seeking_matches_full_decode(tmp_path, monkeypatch, shift_s):
    """Keyframes every 8 frames and B-frames: sparse indices seek, and give the same pixels as
    decoding everything; a seek that lands past its target falls back to a plain decode."""
    path = str(tmp_path / "gop8.mp4")
    clip = np.concatenate([_clip(40, 32, 32)] * 2)  # 80 frames
    clip[:, :4, :4] = np.arange(80)[:, None, None, None] * 3  # frame number in a corner
    synthetic.write_mp4(path, clip, fps=10, gop=8)
    full, _ = video.read_video(path, 80, image_size=32)
    seeks, opens, real_open = [], [], video._open  # pylint: disable=protected-access

    def counting_open(p):
        opens.append(p)
        return _CountingContainer(real_open(p), seeks, shift_s)

    monkeypatch.setattr(video, "_open", counting_open)
    some, info = video.read_video(path, 4, image_size=32)
    np.testing.assert_array_equal(info.indices, [0, 26, 52, 79])
    np.testing.assert_array_equal(some, full[info.indices])
    if shift_s:  # index pass, seeking pass (abandoned at the overshoot), plain pass
        assert len(seeks) == 1 and len(opens) == 3
    else:  # one seek per wanted frame after the first: keyframes 24, 48, 72
        assert len(seeks) == 3 and len(opens) == 2


def test_in_order_fallback_matches(media):
    """The reader for streams without usable pts (decoder output order) gives the same frames."""
    root, _ = media
    path = os.path.join(root, "clip.mp4")
    full, _ = video.read_video(path, T, image_size=W)
    got = {}
    video._decode_in_order(path, [0, 7, 29], W, got)  # pylint: disable=protected-access
    assert sorted(got) == [0, 7, 29]
    for i, frame in got.items():
        np.testing.assert_array_equal(frame, full[i])


def test_resize_matches_siglip_image_processor():
    import transformers  # pylint: disable=import-outside-toplevel
    # The PIL backend is the processor LLaVA used; transformers 5 falls back to it without
    # torchvision, older versions only have it.
    cls = getattr(transformers, "SiglipImageProcessorPil", None) or transformers.SiglipImageProcessor
    rng = np.random.default_rng(0)
    for h, w, s in [(50, 70, 32), (20, 24, 48), (384, 384, 384)]:
        frames = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        mine = video.normalize_frames(video.resize_frames(frames, s), 0.5, 0.5)
        proc = cls(size={"height": s, "width": s}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        ref = np.asarray(proc(list(frames), return_tensors="np")["pixel_values"]).transpose(0, 2, 3, 1)
        assert mine.dtype == np.float32 and mine.shape == ref.shape
        np.testing.assert_array_equal(mine, ref)  # bit-exact: same PIL resize, same float ops
        raw = proc(list(frames), do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(video.resize_frames(frames, s), np.asarray(raw).transpose(0, 2, 3, 1))


def test_normalize_numpy_and_jax():
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, -1, 1).repeat(3, -1)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    ref = (x.astype(np.float64) / 255 - np.array(mean)) / np.array(std)
    out = video.normalize_frames(x, mean, std)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)
    jout = video.normalize_frames(jnp.asarray(x), mean, std)
    assert isinstance(jout, type(jnp.zeros(1))) and jout.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(jout), out, atol=1e-6)
    np.testing.assert_array_equal(video.normalize_frames(np.array([0, 255], np.uint8)), [-1.0, 1.0])


def _write_empty_avi(path):
    """An avi with a video stream header and no frames: opens fine, nothing to decode. (An mp4
    or mkv without frames does not even open: those are unreadable.)"""
    with av.open(path, "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()


def test_bad_videos_give_their_reason(media, tmp_path):
    root, clip = media
    good = os.path.join(root, "syn", _rows(root)[0]["video"])
    with open(good, "rb") as f:
        data = f.read()
    fast = str(tmp_path / "faststart.mp4")
    synthetic.write_mp4(fast, clip[:, :32, :32], faststart=True)
    with open(fast, "rb") as f:
        fast_data = f.read()
    files = {
        "zero.mp4": b"",
        "half.mp4": data[: len(data) // 2],  # moov at the end: no index left
        "half_faststart.mp4": fast_data[: len(fast_data) // 2],  # index kept, frames missing
        "notes.mp4": b"these are notes, not a video\n" * 20,
        "random.webm": np.random.default_rng(0).bytes(4096),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    (tmp_path / "bad_frames").mkdir()
    (tmp_path / "bad_frames" / "0001.jpg").write_bytes(b"not a jpeg")
    _write_empty_avi(str(tmp_path / "no_frames.avi"))
    expected = {
        "missing.mp4": records.MISSING_VIDEO, "missing_folder": records.MISSING_VIDEO,
        "zero.mp4": records.UNREADABLE_VIDEO, "half.mp4": records.UNREADABLE_VIDEO,
        "half_faststart.mp4": records.UNREADABLE_VIDEO, "notes.mp4": records.UNREADABLE_VIDEO,
        "random.webm": records.UNREADABLE_VIDEO, "bad_frames": records.UNREADABLE_VIDEO,
        "empty_folder": records.NO_FRAMES, "only_text": records.NO_FRAMES, "no_frames.avi": records.NO_FRAMES,
    }
    for name, reason in expected.items():
        path = str(tmp_path / name)
        with pytest.raises(video.VideoError) as err:
            video.read_video(path, 4, image_size=32)
        e = err.value
        assert e.reason == reason, (name, e)
        assert e.detail and path in str(e) and "Fix:" in str(e), str(e)


@pytest.mark.parametrize("version, expected", [("18.1.0", {"threads": 1}), ("17.0.0", {"threads": 1}),
                                               ("16.0.1", {}), ("12.3.0", {})])
def test_one_swscale_thread_only_where_pyav_has_threaded_conversion(version, expected):
    assert video.swscale_one_thread(version) == expected


def test_webp_reads_through_imageio(tmp_path, monkeypatch):
    """WebP (FFmpeg's decoder has no animation support) goes through imageio's pillow plugin:
    every frame exact for a lossless animation, fps from the frame durations, partial reads and
    fps sampling as for other files; a broken WebP is UNREADABLE_VIDEO."""
    from PIL import features  # pylint: disable=import-outside-toplevel
    if not features.check("webp"):
        pytest.skip("this Pillow has no WebP support")
    clip = _clip(10)
    path = str(tmp_path / "anim.webp")
    durations = [100, 150] * 5  # 1.25 s: 8 fps on average
    frames = [Image.fromarray(f) for f in clip]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, lossless=True)

    def no_pyav(*args, **kwargs):
        raise AssertionError("a WebP must not reach the PyAV reader")

    monkeypatch.setattr(video, "_read_file", no_pyav)
    full, info = video.read_video(path, 10, image_size=(H, W))
    assert (info.num_source_frames, info.fps, info.duration_s, info.repeated) == (10, 8.0, 1.25, False)
    np.testing.assert_array_equal(full, clip)  # lossless, and H x W is the native size
    some, info = video.read_video(path, 4, image_size=32, resize="shortest_edge_crop")
    np.testing.assert_array_equal(info.indices, video.uniform_indices(10, 4))
    np.testing.assert_array_equal(some, video.resize_frames(clip[info.indices], 32, "shortest_edge_crop"))
    sampled, info = video.read_video(path, 6, image_size=W, fps_sampling=2.0)  # every 4th frame
    np.testing.assert_array_equal(np.unique(info.indices), [0, 4, 8])
    np.testing.assert_array_equal(sampled, video.resize_frames(clip[info.indices], W))
    # The signature decides, not the extension; a still WebP is one frame at folder_fps.
    still = str(tmp_path / "still.bin")
    frames[3].save(still, format="WEBP", lossless=True)
    one, info = video.read_video(still, 2, image_size=(H, W), folder_fps=5.0)
    assert info.num_source_frames == 1 and info.fps == 5.0 and info.repeated
    np.testing.assert_array_equal(one, clip[[3, 3]])
    with open(path, "rb") as f:
        data = f.read()
    broken = tmp_path / "broken.webp"
    broken.write_bytes(data[: len(data) // 2])
    monkeypatch.undo()  # a WebP Pillow cannot open goes on to PyAV, which fails too
    with pytest.raises(video.VideoError) as err:
        video.read_video(str(broken), 4, image_size=32)
    assert err.value.reason == records.UNREADABLE_VIDEO and str(broken) in str(err.value)
