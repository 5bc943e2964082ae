"""The training CLI end to end on the tiny config: artifacts, exact resume, SIGTERM, refusals,
non-finite stops, DPO references, SFT on triplets, two processes on localhost.

Every run is a real `python -m leanpo_jax.train` subprocess on one CPU device (two for the
multi-process test); the synthetic corpus is generated inside each workdir.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO_ROOT, cli_env, run_cli

from leanpo_jax.train import checkpoint as ckpt_lib
from leanpo_jax.train.metrics_log import read_metrics

TRAIN = ["-m", "leanpo_jax.train", "--config", "configs/tiny.py",
         "--config.logging.progress_bar=False"]
# Checkpoints every 2 steps, all kept, so runs can be compared at the same step.
EVERY_2 = ["--config.checkpoint.every=2", "--config.checkpoint.max_to_keep=20"]
METHOD_NAMES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected", "logps/chosen_avg", "logps/rejected_avg",
                "loss/preference", "loss/sft", "smoothing/active", "tokens_per_s", "pairs_per_s", "mfu")


def train(workdir, *extra, check=True):
    return run_cli([*TRAIN, f"--workdir={workdir}", *extra], check=check)


def train_rows(workdir):
    return [r for r in read_metrics(workdir) if "kind" not in r]


def saved_arrays(workdir, step):
    """{path: numpy array} of a checkpoint's state item, read without a target structure."""
    import orbax.checkpoint as ocp

    path = os.path.join(workdir, "checkpoints", str(step), "state")
    tree = ocp.PyTreeCheckpointer().restore(path)
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def saved_arrays_on_one_device(workdir, step):
    """`saved_arrays` for a checkpoint written on another topology (e.g. by two processes):
    every array is restored onto this process's first device."""
    import orbax.checkpoint as ocp

    path = os.path.join(workdir, "checkpoints", str(step), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    meta = checkpointer.metadata(path)
    meta = getattr(meta, "item_metadata", meta)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), getattr(meta, "tree", meta))
    flat, _ = jax.tree_util.tree_flatten_with_path(checkpointer.restore(path, restore_args=args))
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The uninterrupted 20-step reference run (with the embedded Video-MME-format benchmark
    answered every 10 steps: eval.benchmark)."""
    from leanpo_jax.eval.synthetic import write_synthetic_videomme

    bench = write_synthetic_videomme(str(tmp_path_factory.mktemp("bench")), num_videos=2, frames=8, size=32)
    workdir = str(tmp_path_factory.mktemp("full"))
    proc = train(workdir, *EVERY_2, "--config.eval.benchmark.task=videomme",
                 f"--config.eval.benchmark.data={bench['data']}",
                 f"--config.eval.benchmark.video_root={bench['video_root']}", "--config.eval.benchmark.every=10")
    return workdir, proc


def test_cli_run_writes_every_artifact_and_learns(full_run):
    workdir, proc = full_run
    assert "done at step 20" in proc.stdout
    rows = train_rows(workdir)
    assert [r["step"] for r in rows] == list(range(1, 21))
    for name in METHOD_NAMES:
        assert name in rows[-1], name
    assert all(np.isfinite(r["loss"]) and r["tokens_per_s"] > 0 and r["pairs_per_s"] > 0 for r in rows)
    pref = [r["loss/preference"] for r in rows]
    assert np.mean(pref[-5:]) < np.mean(pref[:5]) - 0.05, pref
    kinds = {r.get("kind") for r in read_metrics(workdir)}
    assert {"probe", "eval", "benchmark"} <= kinds
    # The in-training benchmark: its rows at steps 10 and 20, each the accuracy its folder's
    # scores.json holds over the 6 questions.
    bench = [r for r in read_metrics(workdir) if r.get("kind") == "benchmark"]
    assert [r["step"] for r in bench] == [10, 20] and all(r["eval/videomme/questions"] == 6 for r in bench)
    for r in bench:
        with open(os.path.join(workdir, "benchmark", f"step_{r['step']:06d}", "scores.json")) as f:
            assert json.load(f)["videomme"]["accuracy"] == pytest.approx(r["eval/videomme/accuracy"])
    assert ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == 20
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    assert os.path.getsize(os.path.join(workdir, "training_curves.png")) > 10_000
    assert os.path.exists(os.path.join(workdir, "skipped_records.jsonl"))

    from leanpo_jax.models import load_hf
    from flax import nnx

    # The export is a complete HF folder: weights, config and the training tokenizer.
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(
        os.listdir(os.path.join(workdir, "hf")))

    exported = nnx.state(load_hf(os.path.join(workdir, "hf")), nnx.Param)
    final, first = saved_arrays(workdir, 20), saved_arrays(workdir, 2)
    exported = {jax.tree_util.keystr(p): np.asarray(v)
                for p, v in jax.tree_util.tree_flatten_with_path(exported)[0]}

    def match(prefix, table):
        return {k: v for k, v in table.items() if k.startswith(prefix)}

    # The export holds the final trainable params; frozen params never moved (bit for bit).
    trainable = match("['params']['trainable']", final)
    frozen_end, frozen_start = match("['params']['frozen']", final), match("['params']['frozen']", first)
    assert trainable and frozen_end and frozen_end.keys() == frozen_start.keys()
    for key in frozen_end:
        np.testing.assert_array_equal(frozen_end[key], frozen_start[key])
    embed = [v for k, v in trainable.items() if "embed" in k]
    exported_embed = [v for k, v in exported.items() if "embed" in k and "vision" not in k]
    assert len(embed) == 1 and len(exported_embed) == 1
    np.testing.assert_array_equal(exported_embed[0], embed[0])
    embed_key = next(k for k in trainable if "embed" in k)
    assert not np.array_equal(embed[0], first[embed_key])  # trainable params did move


def test_interrupted_and_resumed_runs_equal_the_uninterrupted_run(full_run, tmp_path):
    """3 steps, then a rerun to 8 stopped by SIGTERM, then a rerun to 8: same losses and params
    as the uninterrupted run; a changed learning rate is refused; a finished run does nothing."""
    full_dir, _ = full_run
    workdir = str(tmp_path)
    train(workdir, *EVERY_2, "--config.num_steps=3")
    assert [r["step"] for r in train_rows(workdir)] == [1, 2, 3]

    proc = subprocess.Popen([sys.executable, *TRAIN, f"--workdir={workdir}", *EVERY_2,
                             "--config.num_steps=8"], env=cli_env(), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while (time.time() < deadline and proc.poll() is None
           and max([r["step"] for r in train_rows(workdir)] or [0]) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, (out, err)
    assert "SIGTERM" in err
    stopped = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step()
    assert 4 <= stopped < 8

    refused = train(workdir, *EVERY_2, "--config.num_steps=8", "--config.optimizer.learning_rate=0.01",
                    check=False)
    assert refused.returncode == 1 and "optimizer.learning_rate" in refused.stderr

    train(workdir, *EVERY_2, "--config.num_steps=8")
    rows, reference = train_rows(workdir), train_rows(full_dir)[:8]
    assert [r["step"] for r in rows] == list(range(1, 9))
    for got, want in zip(rows, reference):
        for key in ("loss", "loss/preference", "logps/chosen", "rewards/margins"):
            assert abs(got[key] - want[key]) <= 1e-6 * max(1.0, abs(want[key])), (got["step"], key)
    resumed, uninterrupted = saved_arrays(workdir, 8), saved_arrays(full_dir, 8)
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)

    again = train(workdir, *EVERY_2, "--config.num_steps=8")
    assert "nothing to do" in again.stdout
    assert len(train_rows(workdir)) == 8


def test_non_finite_updates_are_skipped_counted_and_stop_the_run(tmp_path):
    """An absurd learning rate makes step 1's update blow the weights up; the next gradients are
    non-finite, are skipped (params untouched) and counted, and after 2 in a row the run stops.
    Run as DPO: the first step's rewards are 0 (policy == cached reference)."""
    workdir = str(tmp_path)
    proc = train(workdir, "--config.loss.name=dpo", "--config.loss.beta=0.1",
                 "--config.optimizer.learning_rate=1e30", "--config.optimizer.warmup_ratio=0.0",
                 "--config.optimizer.max_grad_norm=0", "--config.train.max_consecutive_skips=2",
                 "--config.checkpoint.every=1", "--config.checkpoint.max_to_keep=20", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "non-finite updates in a row" in proc.stderr and "train.max_consecutive_skips" in proc.stderr
    rows = train_rows(workdir)
    assert rows[0]["optim/skipped_total"] == 0
    assert abs(rows[0]["rewards/margins"]) < 1e-4 and abs(rows[0]["rewards/chosen"]) < 1e-4
    assert rows[-1]["optim/skipped"] == 2 and rows[-1]["optim/skipped_total"] == 2
    assert len(rows) == 3
    caches = os.listdir(os.path.join(workdir, "reference"))
    assert len([c for c in caches if c.endswith(".npz")]) == 2  # train and eval pairs
    latest = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step()
    assert latest == 2  # the step that completed the stop was not saved


def test_sft_on_triplets_trains_on_the_answers(tmp_path):
    workdir = str(tmp_path)
    train(workdir, "--config.loss.name=sft", "--config.num_steps=2", "--config.checkpoint.export_hf=False")
    rows = train_rows(workdir)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(abs(r["loss"] - r["loss/sft"]) < 1e-5 for r in rows)
    assert "logps/rejected" not in rows[0]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _signal_after(procs, workdir, step, sig, target):
    """Sends `sig` to procs[target] once the run logged `step`; -> [(stdout, stderr)] per proc."""
    deadline = time.time() + 300
    while (time.time() < deadline and all(p.poll() is None for p in procs)
           and max([r["step"] for r in train_rows(workdir)] or [0]) < step):
        time.sleep(0.2)
    procs[target].send_signal(sig)
    return [p.communicate(timeout=300) for p in procs]


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    workdir = str(tmp_path)
    proc = subprocess.Popen([sys.executable, *TRAIN, f"--workdir={workdir}",
                             "--config.checkpoint.export_hf=False"], env=cli_env(), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    [(out, err)] = _signal_after([proc], workdir, 1, signal.SIGINT, 0)
    assert proc.returncode == 130, (out, err)
    assert "SIGINT" in err and "rerun the same command" in err
    stopped = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step()
    assert 1 <= stopped < 20 and max(r["step"] for r in train_rows(workdir)) == stopped


def _two_processes(workdir, port, *extra):
    return [subprocess.Popen(
        [sys.executable, *TRAIN, f"--workdir={workdir}", "--config.total_steps=10",
         "--config.checkpoint.every=100", "--config.checkpoint.export_hf=False",
         f"--config.distributed.coordinator_address=localhost:{port}",
         "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}", *extra],
        env=cli_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]


def test_sigterm_on_one_of_two_processes_stops_both_at_one_step_and_resumes_exactly(tmp_path):
    """Only process 1 gets SIGTERM: both stop at the same step (all-reduced request), one
    collective checkpoint of that step, both exit 143; a rerun of both continues exactly as the
    uninterrupted two-process run (losses and final params)."""
    reference_dir, workdir = str(tmp_path / "reference"), str(tmp_path / "run")
    procs = _two_processes(reference_dir, _free_port(), "--config.num_steps=6")
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # The uninterrupted run: one collective checkpoint at the end, one log, one summary.
    assert ckpt_lib.Checkpointer(os.path.join(reference_dir, "checkpoints")).all_steps() == [6]
    assert [r["step"] for r in train_rows(reference_dir)] == list(range(1, 7))
    assert json.load(open(os.path.join(reference_dir, "train_summary.json")))["step"] == 6

    procs = _two_processes(workdir, _free_port(), "--config.num_steps=6")
    outs = _signal_after(procs, workdir, 1, signal.SIGTERM, 1)
    assert [p.returncode for p in procs] == [143, 143], outs
    assert all("SIGTERM" in err for _, err in outs), outs
    assert "another process" in outs[0][1]  # process 0 stopped for process 1's signal
    saved = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).all_steps()
    assert len(saved) == 1 and 1 <= saved[0] < 6, saved  # one checkpoint: the stop step
    assert [r["step"] for r in train_rows(workdir)] == list(range(1, saved[0] + 1))

    # A rerun may meet on another port (distributed.coordinator_address / process_id are
    # launch details, not part of the run's config).
    procs = _two_processes(workdir, _free_port(), "--config.num_steps=6")
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rows, reference = train_rows(workdir), train_rows(reference_dir)
    assert [r["step"] for r in rows] == [r["step"] for r in reference] == list(range(1, 7))
    for got, want in zip(rows, reference):
        for key in ("loss", "loss/preference", "logps/chosen", "rewards/margins"):
            assert abs(got[key] - want[key]) <= 1e-6 * max(1.0, abs(want[key])), (got["step"], key)
    resumed, uninterrupted = (saved_arrays_on_one_device(d, 6) for d in (workdir, reference_dir))
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)
