"""The synthetic shapes generator: determinism, record consistency, pixels that show the answer."""

import json
import os

import numpy as np
import pytest

from leanpo_jax.data import records, synthetic, video

NUM, SEED = 8, 5  # 8 videos: every question kind twice


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    summary = synthetic.generate(root, NUM, seed=SEED)
    return root, summary


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [line for line in f if line.strip()]


def _decode(root, rel):
    frames, _ = video.read_video(os.path.join(root, rel), 24, image_size=64)
    return frames


def test_summary_and_files(folder):
    root, s = folder
    assert s["num"] == NUM and s["questions"] == {k: 2 for k in synthetic.QUESTION_KINDS}
    assert len(_lines(s["triplets"])) == len(_lines(s["pairs"])) == NUM
    assert sorted(os.listdir(s["videos"])) == [f"shapes-{i:06d}.mp4" for i in range(NUM)]


def test_deterministic_per_seed(folder, tmp_path):
    root, _ = folder
    again = synthetic.generate(str(tmp_path / "again"), NUM, seed=SEED)
    prefix = synthetic.generate(str(tmp_path / "prefix"), 3, seed=SEED)
    other = synthetic.generate(str(tmp_path / "other"), NUM, seed=SEED + 1)
    for name in ("triplets", "pairs"):
        with open(os.path.join(root, f"{name}.jsonl"), "rb") as a, open(again[name], "rb") as b:
            assert a.read() == b.read()
        assert _lines(prefix[name]) == _lines(os.path.join(root, f"{name}.jsonl"))[:3]  # num extends
        assert _lines(other[name]) != _lines(again[name])
    for row in map(json.loads, _lines(again["pairs"])):
        with open(os.path.join(root, row["video"]), "rb") as a, \
                open(os.path.join(again["out_dir"], row["video"]), "rb") as b:
            assert a.read() == b.read(), row["id"]


def test_same_video_bytes_in_fresh_processes(tmp_path, run_cli):
    """The tiny config's corpus (16 videos of 8 frames at 32 px, seed 0) written by two fresh
    processes and by this one: the same bytes. With x264's mbtree on, ~1 process in 3 wrote
    different bytes for some of these videos (video 15 most often), so runs could not be compared."""
    args = ["--num", "16", "--seed", "0", "--size", "32", "--frames", "8"]
    outs = [tmp_path / f"process{i}" for i in range(2)]
    for out in outs:
        run_cli(["-m", "leanpo_jax.data.synthetic", "--out", str(out), *args], cwd=str(tmp_path))
    here = synthetic.generate(str(tmp_path / "here"), 16, seed=0, num_frames_video=8, size=32)
    for i in range(16):
        name = f"shapes-{i:06d}.mp4"
        with open(os.path.join(here["videos"], name), "rb") as f:
            expected = f.read()
        for out in outs:
            assert (out / "videos" / name).read_bytes() == expected, (str(out), name)


def _words(sentence):
    return sentence.rstrip(".").split()


def test_records_are_valid_and_pairs_differ_in_one_attribute_word(folder):
    root, s = folder
    triplets = [json.loads(x) for x in _lines(s["triplets"])]
    for n, (line, triplet) in enumerate(zip(_lines(s["pairs"]), triplets), 1):
        for text, kind in ((line, "pairs"), (json.dumps(triplet), "triplets")):
            rec = records.parse_record(text, f"pairs.jsonl:{n}", kind)
            assert not isinstance(rec, records.BadRecord), rec
        pair = json.loads(line)
        attrs = pair["attributes"]
        kind = attrs["question"]
        assert not os.path.isabs(pair["video"]) and os.path.isfile(os.path.join(root, pair["video"]))
        for key in ("id", "video", "prompt"):
            assert pair[key] == triplet[key]
        assert pair["prompt"] == synthetic.QUESTIONS[kind] and pair["chosen"] == triplet["answer"]
        chosen, rejected = _words(pair["chosen"]), _words(pair["rejected"])
        assert len(chosen) == len(rejected)
        diff = [(a, b) for a, b in zip(chosen, rejected) if a != b]
        assert len(diff) == 1, (pair["chosen"], pair["rejected"])
        truth = synthetic.COUNTS[attrs["count"] - 1] if kind == "count" else attrs[kind]
        assert diff[0][0] == truth and diff[0][1] in synthetic.VALUES[kind] and diff[0][1] != truth
        assert {k: v for k, v in synthetic.sample_attributes(SEED, n - 1).items() if k in attrs} == attrs


def _foreground(frames):
    """Pixels far from the background colour, [T, S, S] bool."""
    return np.abs(frames.astype(int) - np.array(synthetic.BACKGROUND)).sum(-1) > 120


def _runs(mask_1d):
    return int(np.sum(np.diff(np.concatenate([[0], mask_1d.astype(int)])) == 1))


def test_decoded_pixels_show_the_attributes(folder):
    """Decoded (lossy) frames resemble the drawn ones and show count, colour and direction."""
    root, s = folder
    for row in map(json.loads, _lines(s["pairs"])):
        a = row["attributes"]
        full = synthetic.sample_attributes(SEED, int(row["id"].split("-")[1]))
        drawn = synthetic.render_frames(full, 64, 24)
        frames = _decode(root, row["video"])
        assert np.abs(frames.astype(int) - drawn).mean() < 5.0  # lossy: 4:2:0 chroma, YUV rounding
        fg = _foreground(frames)
        horizontal = a["direction"] in ("left", "right")
        across = fg[0].any(axis=1 if horizontal else 0)  # rows (or columns) the lanes occupy
        assert _runs(across) == a["count"], row["id"]
        colour = np.median(frames[fg], axis=0)
        nearest = min(synthetic.COLOURS, key=lambda c: np.abs(np.array(synthetic.COLOURS[c]) - colour).sum())
        assert nearest == a["colour"], (row["id"], colour)
        ys, xs = np.nonzero(fg[0])
        ye, xe = np.nonzero(fg[-1])
        move = (xe.mean() - xs.mean()) if horizontal else (ye.mean() - ys.mean())
        assert abs(move) > 0.3 * 64 and (move > 0) == (a["direction"] in ("right", "down")), row["id"]


@pytest.mark.parametrize("shape,lo,hi",
                         [("circle", 0.7, 0.9), ("square", 0.95, 1.0), ("triangle", 0.4, 0.65)])
def test_shapes_fill_their_box_as_drawn(shape, lo, hi):
    attrs = {"shape": shape, "colour": "red", "direction": "left", "count": 1,
             "jitter": [0.5], "start": [0.5]}
    mask = _foreground(synthetic.render_frames(attrs, 64, 2)[:1])[0]
    rows, cols = np.nonzero(mask)
    ratio = mask.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
    assert lo <= ratio <= hi, (shape, ratio)


def test_cli_one_line_summary(tmp_path, run_cli):
    out = tmp_path / "cli"
    proc = run_cli(["-m", "leanpo_jax.data.synthetic", "--out", str(out), "--num", "3", "--seed", "1",
                    "--size", "32", "--frames", "8"], cwd=str(tmp_path))
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote 3 videos (32x32, 8 frames"), proc.stdout
    assert len(_lines(out / "pairs.jsonl")) == 3
    frames, info = video.read_video(str(out / "videos" / "shapes-000002.mp4"), 8, image_size=32)
    assert frames.shape == (8, 32, 32, 3) and info.num_source_frames == 8
    bad = run_cli(["-m", "leanpo_jax.data.synthetic", "--out", str(out), "--num", "1", "--size", "33"],
                  cwd=str(tmp_path), check=False)
    assert bad.returncode == 2 and "even size" in bad.stderr
