"""A run that went wrong looks wrong: skipped records stop it (exit 4), empty steps log null,
an interrupted finish is completed by a rerun, torn log lines are repaired on resume, any
checkpoint exports (`python -m leanpo_jax.export`), a disk-full save is one clear line."""

import errno
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from conftest import REPO_ROOT

from leanpo_jax.data import synthetic
from leanpo_jax.data.pipeline import DataPipeline
from leanpo_jax.models.runtime import data_interface, model_source
from leanpo_jax.train import checkpoint as ckpt_lib
from leanpo_jax.train import finalize
from leanpo_jax.train.metrics_log import read_metrics

TRAIN = ["-m", "leanpo_jax.train", "--config", "configs/tiny.py", "--config.logging.progress_bar=False",
         "--config.logging.tensorboard=False", "--config.probe.every=100", "--config.eval.every=100",
         "--config.checkpoint.every=100"]


def _tiny_config():
    spec = importlib.util.spec_from_file_location("tiny_config", os.path.join(REPO_ROOT, "configs", "tiny.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """8 synthetic records, and a copy whose records trained at steps 2 and 3 (batch size 1,
    the training shuffle) point at a missing video."""
    root = str(tmp_path_factory.mktemp("failures_corpus"))
    info = synthetic.generate(root, 8, seed=3, num_frames_video=8, size=32)
    config = _tiny_config()
    data = config.data
    data.pairs, data.batch_size, data.num_epochs, data.synthetic = info["pairs"], 1, 1, 0
    interface = data_interface(model_source(config.model, "cpu"), data)
    with DataPipeline(data, model=interface, train=True) as pipe:
        order = [int(batch["record_index"][0]) for batch in pipe]
    with open(info["pairs"], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    bad = {order[1], order[2]}
    mixed = os.path.join(root, "mixed.jsonl")
    with open(mixed, "w", encoding="utf-8") as f:
        for line, row in enumerate(rows):
            f.write(json.dumps({**row, "video": "videos/gone.mp4"} if line in bad else row) + "\n")
    return {"root": root, "pairs": info["pairs"], "mixed": mixed}


def test_training_on_nothing_stops_before_the_first_step(corpus, tmp_path, run_cli):
    workdir = str(tmp_path / "run")
    proc = run_cli([*TRAIN, f"--workdir={workdir}", f"--config.data.pairs={corpus['pairs']}",
                    f"--config.data.video_root={tmp_path}", "--config.num_steps=4",
                    "--config.total_steps=4"], check=False)
    assert proc.returncode == 4, proc.stderr
    assert "stopped before the first step: 2 of 2 records skipped (100.0%): missing_video 2" in proc.stderr
    assert "no record was usable" in proc.stderr and "data.video_root" in proc.stderr
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # nothing trained, nothing saved
    assert not os.path.exists(os.path.join(workdir, finalize.SUMMARY_FILENAME))
    # A start that fails on its config leaves no empty checkpoints/ folder either.
    proc = run_cli([*TRAIN, f"--workdir={tmp_path / 'bad'}", "--config.data.pairs=/no/such.jsonl"], check=False)
    assert proc.returncode == 1 and "/no/such.jsonl" in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "bad" / "checkpoints")


def _torn(path, text):
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)  # a kill mid-append: no newline


def test_skips_empty_steps_torn_logs_interrupted_finish_and_export(corpus, tmp_path, run_cli):
    workdir = str(tmp_path / "run")
    base = [*TRAIN, f"--workdir={workdir}", f"--config.data.pairs={corpus['mixed']}", "--config.data.batch_size=1",
            "--config.data.num_epochs=1", "--config.total_steps=8"]
    # 1. Steps 2 and 3 hold only a missing video: 2 of the 6 records read by step 6 (33%) is
    #    more than data.max_skipped_fraction=0.1; a 6-step run is judged on its 6 records.
    proc = run_cli([*base, "--config.num_steps=6"], check=False)
    assert proc.returncode == 4, proc.stderr
    assert ("stopped at step 6: 2 of 6 records skipped (33.3%): missing_video 2; each one (file:line, id, "
            "reason, fix) is listed in") in proc.stderr
    assert "data.max_skipped_fraction=0.1" in proc.stderr and "Checkpoint 6 is saved" in proc.stderr
    assert "[data] 1 of 2 records skipped (50.0%): missing_video 1" in proc.stdout  # as skips grow
    assert ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [6]
    rows = [r for r in read_metrics(workdir) if r.get("kind", "train") == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for row in rows:
        empty = row["step"] in (2, 3)
        assert row["empty_steps"] == int(empty)
        for key in ("loss", "loss/preference", "logps/chosen", "rewards/margins", "optim/grad_norm"):
            assert (row[key] is None) == empty, (row["step"], key, row[key])  # null, never a false 0
        assert row["optim/lr"] is not None
    assert "compile_s" in rows[0] and "compile_s" not in rows[3]  # throughput without compiling

    # 2. A kill mid-append tore the last line of both logs; the rerun with a raised threshold
    #    (a key a resume may change) repairs them and trains steps 7-8.
    _torn(os.path.join(workdir, "metrics.jsonl"), '{"step": 7, "loss": 0.5')
    _torn(os.path.join(workdir, "skipped_records.jsonl"), '{"step": 9, "id"')
    proc = run_cli([*base, "--config.num_steps=8", "--config.data.max_skipped_fraction=0.5"])
    assert "resumed from step 6" in proc.stdout
    assert "leanpo-train: data: 2 of 8 records skipped (25.0%): missing_video 2" in proc.stdout
    assert [r["step"] for r in read_metrics(workdir) if r.get("kind", "train") == "train"] == list(range(1, 9))
    with open(os.path.join(workdir, "skipped_records.jsonl"), encoding="utf-8") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2]
    hf = os.path.join(workdir, finalize.HF_DIRNAME)
    assert finalize.export_step(hf) == 8
    summary = json.load(open(os.path.join(workdir, finalize.SUMMARY_FILENAME)))
    assert summary["step"] == 8 and summary["data"]["skipped"] == {"missing_video": 2}
    weights = open(os.path.join(hf, "model.safetensors"), "rb").read()

    # 3. Killed during the final export: a half-written folder and no summary. The rerun
    #    finishes what is missing; a further rerun has nothing to do.
    shutil.move(hf, hf + ".partial")
    os.remove(os.path.join(hf + ".partial", "config.json"))
    os.remove(os.path.join(workdir, finalize.SUMMARY_FILENAME))
    final = [*base, "--config.num_steps=8", "--config.data.max_skipped_fraction=0.5"]
    proc = run_cli(final)
    assert "finishing its missing artifacts: hf, train_summary.json" in proc.stdout
    assert finalize.export_step(hf) == 8 and not os.path.exists(hf + ".partial")
    assert open(os.path.join(hf, "model.safetensors"), "rb").read() == weights
    assert json.load(open(os.path.join(workdir, finalize.SUMMARY_FILENAME)))["step"] == 8
    assert "nothing to do" in run_cli(final).stdout

    # 4. Any checkpoint exports; an unknown step names the saved ones.
    out = str(tmp_path / "step6")
    proc = run_cli(["-m", "leanpo_jax.export", "--workdir", workdir, "--step", "6", "--out", out])
    assert f"wrote {out}" in proc.stdout and finalize.export_step(out) == 6
    assert sorted(os.listdir(out)) == sorted(os.listdir(hf))
    assert open(os.path.join(out, "model.safetensors"), "rb").read() != weights
    proc = run_cli(["-m", "leanpo_jax.export", "--workdir", workdir, "--step", "5"], check=False)
    assert proc.returncode == 1 and "saved steps: [6, 8]" in proc.stderr, proc.stderr


def test_a_full_disk_is_one_line_naming_the_path_the_size_and_the_intact_checkpoint(tmp_path, monkeypatch):
    ckpt = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
    state = {"w": np.ones((256, 256), np.float32)}
    ckpt.save(1, state, data_state={}, meta={})

    def full(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as err:  # as tensorstore surfaces it: wrapped in another error
            raise RuntimeError("Error writing ocdbt file") from err

    monkeypatch.setattr(ckpt._manager, "save", full)
    with pytest.raises(ckpt_lib.CheckpointWriteError) as caught:
        ckpt.save(2, state, data_state={}, meta={})
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "checkpoints") in message
    assert "saving checkpoint 2" in message and "needs about 256.0 KiB" in message
    assert "checkpoint 1 is intact" in message and "free" in message
