"""leanpo-generate end to end on the tiny config and synthetic videos: one row per readable
triplet, a corrupt video reported and skipped, killed and restarted without duplicates or gaps,
a rerun over a complete output writes nothing, and the training pipeline reads the pairs.
In process, with sampling on: the rows do not depend on the batch size or on a restart
mid-batch, and a rerun with nothing left to do never builds the model."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import ml_collections
import pytest

from conftest import REPO_ROOT, cli_env, sigkill_after_lines

from leanpo_jax.data import synthetic
from leanpo_jax.generate import self_generate
from leanpo_jax.generate.output import AppendOnlyJsonl
from leanpo_jax.models.registry import ModelSource
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


def rows_of(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def test_killed_restarted_complete_and_readable_by_training(corpus):
    root, input_path = corpus
    output = os.path.join(root, "out", "pairs.jsonl")
    sigkill_after_lines(command(root, input_path, output), output, 1)
    first = rows_of(output)
    assert 1 <= len(first) <= GOOD
    with open(output, "a", encoding="utf-8") as f:
        f.write('{"id": "shapes-0000')  # what a kill mid-write leaves

    done = subprocess.run(command(root, input_path, output), env=cli_env(), cwd=REPO_ROOT,
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
    again = subprocess.run(command(root, input_path, output), env=cli_env(), cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 new rows" in again.stdout and "nothing left to do" in again.stdout
    assert open(output, "rb").read() == before

    data = data_config()
    data.pairs, data.video_root, data.batch_size = output, root, 2
    data.max_response_tokens, data.response_buckets = 32, (16, 32)
    with DataPipeline(ml_collections.ConfigDict(data), model=resolve_model("tiny").interface(), train=False) as pipe:
        batches = list(pipe)
        stats = pipe.stats()
    assert stats["ok"] == GOOD and not stats["skipped"] and len(batches) == GOOD // 2


# ---------------------------------------------------------------------------- in process
def tiny_generate_config(batch_size):
    spec = importlib.util.spec_from_file_location("tiny", os.path.join(REPO_ROOT, "configs", "tiny.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.generate.batch_size = batch_size
    config.generate.max_new_tokens = 6  # few tokens keep it cheap; sampling stays on (T 1.0)
    assert config.generate.winner.temperature == config.generate.loser.temperature == 1.0
    return config


@pytest.fixture(scope="module")
def shared_model():
    return self_generate.load_generation_model(tiny_generate_config(4))


@pytest.fixture(scope="module")
def generators(shared_model):
    """SelfGenerator per batch size, built on first use, sharing the model and their compiles."""
    model, interface = shared_model
    made = {}

    def get(batch_size):
        if batch_size not in made:
            made[batch_size] = self_generate.SelfGenerator(tiny_generate_config(batch_size), model=model,
                                                           interface=interface)
        return made[batch_size]
    return get


@pytest.fixture(scope="module")
def uninterrupted(corpus, generators):
    """(output path, rows) of one uninterrupted batch-4 run over the corpus."""
    root, input_path = corpus
    output = os.path.join(root, "inproc", "uninterrupted.jsonl")
    report = generators(4).run(input_path, output, video_root=root, progress=False)
    assert report["written_this_run"] == GOOD
    return output, rows_of(output)


def by_id(rows):
    return {r["id"]: r for r in rows}


def test_rows_do_not_depend_on_the_batch_size(corpus, generators, uninterrupted):
    root, input_path = corpus
    _, reference = uninterrupted
    output = os.path.join(root, "inproc", "batch3.jsonl")
    # Batches of 3 put every record at another row, next to other records, with other padding.
    generators(3).run(input_path, output, video_root=root, progress=False)
    rows = rows_of(output)
    assert [r["id"] for r in rows] == [r["id"] for r in reference]
    assert len({r["chosen"] for r in rows}) == GOOD  # sampled: distinct texts, not one greedy loop
    scores = ("chosen_avg_logp", "rejected_avg_logp", "answer_avg_logp")
    # The sampled texts are exactly the same. The scores come from a forward at another batch
    # shape, whose float32 rounding may differ in the last bit (seen: 1e-6 on -11.9).
    assert [{k: v for k, v in r.items() if k not in scores} for r in rows] == \
        [{k: v for k, v in r.items() if k not in scores} for r in reference]
    for r, ref in zip(rows, reference):
        assert [r[k] for k in scores] == pytest.approx([ref[k] for k in scores], rel=1e-6)


class StopsAfter(AppendOnlyJsonl):
    """The output file of a run that is killed after `limit` appended rows (mid-batch)."""

    limit = 2

    def append(self, row):
        if len(self.rows) == self.limit:
            self.close()
            raise KeyboardInterrupt("killed")
        super().append(row)


def test_a_run_stopped_mid_batch_and_rerun_writes_the_uninterrupted_rows(corpus, generators, uninterrupted,
                                                                          monkeypatch):
    root, input_path = corpus
    _, reference = uninterrupted
    output = os.path.join(root, "inproc", "restarted.jsonl")
    with monkeypatch.context() as patch:
        patch.setattr(self_generate, "AppendOnlyJsonl", StopsAfter)
        with pytest.raises(KeyboardInterrupt):
            generators(4).run(input_path, output, video_root=root, progress=False)
    assert len(rows_of(output)) == StopsAfter.limit < 4  # the first batch was cut short
    # The rerun puts the rest of the first batch together with the second one.
    report = generators(4).run(input_path, output, video_root=root, progress=False)
    assert report["written_this_run"] == GOOD - StopsAfter.limit
    assert rows_of(output) == reference


def test_a_rerun_with_nothing_left_never_builds_the_model(corpus, uninterrupted, monkeypatch):
    root, input_path = corpus
    done, _ = uninterrupted
    output = os.path.join(root, "inproc", "noop.jsonl")
    shutil.copyfile(done, output)
    before = open(output, "rb").read()

    def no_model(*_, **__):
        raise AssertionError("the model was built although every record is done")

    monkeypatch.setattr(ModelSource, "build", no_model)
    monkeypatch.setattr(ModelSource, "load", no_model)
    generator = self_generate.SelfGenerator(tiny_generate_config(4))
    report = generator.run(input_path, output, video_root=root, progress=False)
    assert report["attempted_this_run"] == report["written_this_run"] == 0
    assert report["pairs"] == GOOD and report["failed"] == 1  # the broken video is still reported
    assert generator.model is None and open(output, "rb").read() == before
