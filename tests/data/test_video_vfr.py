"""Variable-frame-rate videos: sampling by presentation time, true timestamps (all files written here).

Each test frame is one solid grey level that encodes its index (`_LEVEL`), so the decoded
frames say which source frames were chosen, independently of `VideoInfo.indices`.
"""

import os
import types
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from leanpo_jax.data import video
from leanpo_jax.data.batching import ExampleMaker, resolve_spec
from leanpo_jax.data.config import check_data_config, data_config
from leanpo_jax.models import resolve_model

# 12 frames every 25 ms (0-275 ms), then 4 frames 300 ms apart (300-1200 ms): the first quarter
# of the 1.2 s clip holds 12 of its 16 frames.
DENSE_START_MS = [25 * i for i in range(12)] + [300, 600, 900, 1200]
_SIZE = 32


def _level(i):
    return 20 + 12 * i  # 16 frames: 20 .. 200, 12 grey levels apart (codec error is ~1)


def _write_mp4(path, pts_ms, rate=40):
    """libx264 mp4 whose frame i has presentation time pts_ms[i] (time base 1/1000) and grey
    level _level(i). `rate` is only the encoder's nominal rate; the pts decide the times."""
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width = stream.height = _SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((_SIZE, _SIZE, 3), _level(i), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _shown(frames):
    """The source index each returned frame shows (from its grey level)."""
    return [int(round((float(f.mean()) - 20) / 12)) for f in frames]


@pytest.fixture(scope="module")
def dense_start(tmp_path_factory):
    return _write_mp4(str(tmp_path_factory.mktemp("vfr") / "dense_start.mp4"), DENSE_START_MS)


def test_time_sampling_spreads_frames_uniformly_in_time(dense_start):
    frames, info = video.read_video(dense_start, 4, image_size=_SIZE, frame_sampling="time")
    # Targets 0, 0.4, 0.8, 1.2 s; each takes the frame on screen then (the last at or before):
    # 0 ms, 300 ms (frame 12, shown until 600 ms), 600 ms (frame 13), 1200 ms (frame 15).
    np.testing.assert_array_equal(info.indices, [0, 12, 13, 15])
    assert _shown(frames) == [0, 12, 13, 15]
    np.testing.assert_allclose(info.timestamps_s, [0.0, 0.3, 0.6, 1.2], atol=1e-9)
    assert info.sampled_by == "time" and info.num_source_frames == 16 and not info.repeated
    # The span of the pts plus one mean frame interval (n / fps would use FFmpeg's average
    # rate, which for this file is not the frames per second of the clip).
    assert info.duration_s == pytest.approx(1.2 * 16 / 15)


def test_time_sampling_is_the_default(dense_start):
    _, info = video.read_video(dense_start, 4, image_size=_SIZE)
    np.testing.assert_array_equal(info.indices, [0, 12, 13, 15])


def test_index_sampling_keeps_todays_indices_with_true_timestamps(dense_start):
    frames, info = video.read_video(dense_start, 4, image_size=_SIZE, frame_sampling="index")
    np.testing.assert_array_equal(info.indices, video.uniform_indices(16, 4))  # [0, 5, 10, 15]
    assert _shown(frames) == [0, 5, 10, 15]
    # Three of four frames from the first quarter, and the times say so (not index / fps).
    np.testing.assert_allclose(info.timestamps_s, [0.0, 0.125, 0.25, 1.2], atol=1e-9)
    assert info.sampled_by == "index"


def test_time_fps_sampling_takes_one_frame_per_interval(dense_start):
    # 2.5 frames/s in time: targets 0, 0.4, 0.8, 1.2 s (4 <= cap 8), stretched to F = 8.
    frames, info = video.read_video(dense_start, 8, image_size=_SIZE, fps_sampling=2.5, frame_sampling="time")
    chosen = np.array([0, 12, 13, 15])
    np.testing.assert_array_equal(info.indices, chosen[video.uniform_indices(4, 8)])
    assert _shown(frames) == list(info.indices) and info.repeated


@pytest.mark.parametrize("pts_ms", [
    [100 * i for i in range(16)],                     # 10 fps, exact
    [round(i * 1001 / 30) for i in range(16)],         # 29.97 fps rounded to ms: jitter, still constant
], ids=["exact", "ms_rounded_29.97"])
def test_constant_rate_gives_the_same_frames_in_both_modes(tmp_path, pts_ms):
    path = _write_mp4(str(tmp_path / "cfr.mp4"), pts_ms, rate=10)
    for num_frames, fps_sampling in [(4, None), (6, None), (16, None), (20, None), (8, 5.0)]:
        by_time = video.read_video(path, num_frames, image_size=_SIZE, fps_sampling=fps_sampling)
        by_index = video.read_video(path, num_frames, image_size=_SIZE, fps_sampling=fps_sampling,
                                    frame_sampling="index")
        np.testing.assert_array_equal(by_time[1].indices, by_index[1].indices)
        np.testing.assert_array_equal(by_time[0], by_index[0])
        assert by_time[1].sampled_by == "index"  # a constant rate is sampled by index in both modes
        if fps_sampling is None:
            np.testing.assert_array_equal(by_time[1].indices, video.uniform_indices(16, num_frames))
        np.testing.assert_allclose(by_time[1].timestamps_s, np.array(pts_ms)[by_time[1].indices] / 1000, atol=1e-9)


def test_sample_indices_by_time():
    times = np.array(DENSE_START_MS) / 1000
    np.testing.assert_array_equal(video.sample_indices(16, 4, 12.5, times_s=times), [0, 12, 13, 15])
    np.testing.assert_array_equal(video.sample_indices(16, 4, 12.5, times_s=times, frame_sampling="index"),
                                  video.uniform_indices(16, 4))
    # Fewer frames than requested: repeats, in order, first and last kept.
    idx = video.sample_indices(3, 5, 1.0, times_s=np.array([0.0, 0.1, 2.0]))
    np.testing.assert_array_equal(idx, [0, 1, 1, 1, 2])  # targets 0, .5, 1, 1.5, 2 s
    # Evenly spaced times (to well under half a frame interval): index sampling, in both modes.
    even = np.arange(40) / 8 + np.tile([0.0, 0.01], 20)
    for f in (3, 7, 16, 40, 64):
        np.testing.assert_array_equal(video.sample_indices(40, f, 8.0, times_s=even), video.uniform_indices(40, f))
    assert video.is_constant_rate(even) and not video.is_constant_rate(times)
    with pytest.raises(ValueError, match="frame_sampling"):
        video.sample_indices(16, 4, 12.5, times_s=times, frame_sampling="pts")


def test_invalid_frame_sampling_is_refused_naming_the_key(dense_start):
    data = data_config()
    assert data.frame_sampling == "time"
    for bad in ("uniform", "Time", ""):
        data.frame_sampling = bad
        with pytest.raises(ValueError, match=rf"config data\.frame_sampling={bad!r}: expected one of"):
            check_data_config(data)
    with pytest.raises(ValueError, match="frame_sampling='uniform'"):
        video.read_video(dense_start, 4, image_size=_SIZE, frame_sampling="uniform")


@pytest.mark.parametrize("mode, shown", [("time", [0, 12, 13, 15]), ("index", [0, 5, 10, 15])])
def test_the_pipeline_reads_with_the_configured_sampling(dense_start, mode, shown):
    data = data_config()
    data.pairs, data.num_frames, data.frame_sampling = "unused.jsonl", 4, mode
    spec = resolve_spec(data, resolve_model("tiny").interface())
    assert spec.frame_sampling == mode
    maker = ExampleMaker(spec, tokenizer=None, video_root=os.path.dirname(dense_start))
    record = types.SimpleNamespace(video=os.path.basename(dense_start), source="unused.jsonl:1", id="1")
    assert _shown(maker.with_frames(record, {})["frames"]) == shown


def test_webp_with_uneven_durations_is_sampled_by_time(tmp_path):
    from PIL import features  # pylint: disable=import-outside-toplevel
    if not features.check("webp"):
        pytest.skip("this Pillow has no WebP support")
    durations = [25] * 12 + [300] * 4  # frame i starts at DENSE_START_MS[i]
    frames = [Image.fromarray(np.full((_SIZE, _SIZE, 3), _level(i), np.uint8)) for i in range(16)]
    path = str(tmp_path / "dense_start.webp")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, lossless=True)
    got, info = video.read_video(path, 4, image_size=_SIZE)
    np.testing.assert_array_equal(info.indices, [0, 12, 13, 15])
    assert _shown(got) == [0, 12, 13, 15] and info.sampled_by == "time"
    np.testing.assert_allclose(info.timestamps_s, [0.0, 0.3, 0.6, 1.2], atol=1e-9)
    assert info.duration_s == pytest.approx(1.5)  # the sum of the frame durations
    got, info = video.read_video(path, 4, image_size=_SIZE, frame_sampling="index")
    assert _shown(got) == [0, 5, 10, 15]
    np.testing.assert_allclose(info.timestamps_s, [0.0, 0.125, 0.25, 1.2], atol=1e-9)
