"""leanpo-generate end to end on the tiny config and synthetic videos: one row per readable
triplet, a corrupt video reported and skipped, killed and restarted without duplicates or gaps,
a rerun over a complete output writes nothing, and the training pipeline reads the pairs."""

import json
import os
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from conftest import REPO_ROOT

from leanpo_jax.data import synthetic
from leanpo_jax.data.config import data_config
from leanpo_jax.data.pipeline import DataPipeline
from leanpo_jax.models import resolve_model

GOOD = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("gen"))
    info = synthetic.generate(root, GOOD, seed=0, num_frames_video=8, size=32)
    with open(os.path.join(root, "videos", "broken.mp4"), "wb") as f:
        f.write(b"\x00\x01 not a video" * 50)
    rows = open(info["triplets"], encoding="utf-8").read().splitlines()
    broken = {"id": "broken-1", "video": "videos/broken.mp4", "prompt": "How many?", "answer": "Two."}
    rows.insert(2, json.dumps(broken))
    path = os.path.join(root, "input.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    return root, path


def command(root, input_path, output):
    return [sys.executable, "-m", "leanpo_jax.generate", "--config", "configs/tiny.py", "--input", input_path,
            "--video-root", root, "--output", output, "--noprogress"]


def env():
    e = dict(os.environ)
    e.pop("XLA_FLAGS", None)
    e["PYTHONPATH"] = REPO_ROOT
    return e


def rows_of(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def test_killed_restarted_complete_and_readable_by_training(corpus):
    root, input_path = corpus
    output = os.path.join(root, "out", "pairs.jsonl")
    proc = subprocess.Popen(command(root, input_path, output), env=env(), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not rows_of(output):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    first = rows_of(output)
    assert 1 <= len(first) <= GOOD
    with open(output, "a", encoding="utf-8") as f:
        f.write('{"id": "shapes-0000')  # what a kill mid-write leaves

    done = subprocess.run(command(root, input_path, output), env=env(), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = rows_of(output)
    ids = [r["id"] for r in rows]
    assert sorted(ids) == [f"shapes-{i:06d}" for i in range(GOOD)]  # no duplicate, no gap
    assert rows[: len(first)] == first  # earlier rows untouched
    for r in rows:
        assert {"id", "video", "prompt", "chosen", "rejected", "first_turn", "chosen_avg_logp",
                "rejected_avg_logp", "answer_avg_logp", "identical", "augment"} <= set(r)
        assert r["chosen_avg_logp"] < 0 and r["rejected_avg_logp"] < 0 and r["answer_avg_logp"] < 0
        assert r["identical"] == (r["chosen"] == r["rejected"])
    failed = rows_of(output.replace(".jsonl", ".failed.jsonl"))
    assert [f["id"] for f in failed] == ["broken-1"] and failed[0]["reason"] == "unreadable_video"
    assert "broken-1" in done.stderr and "winner > loser" in done.stdout
    report = json.load(open(output.replace(".jsonl", ".report.json")))
    assert report["pairs"] == GOOD and report["failed"] == 1 and report["identical_pairs"] <= GOOD

    before = open(output, "rb").read()
    again = subprocess.run(command(root, input_path, output), env=env(), cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 new rows" in again.stdout
    assert open(output, "rb").read() == before

    data = data_config()
    data.pairs, data.video_root, data.batch_size = output, root, 2
    data.max_response_tokens, data.response_buckets = 32, (16, 32)
    with DataPipeline(ml_collections.ConfigDict(data), model=resolve_model("tiny").interface(), train=False) as pipe:
        batches = list(pipe)
        stats = pipe.stats()
    assert stats["ok"] == GOOD and not stats["skipped"] and len(batches) == GOOD // 2
