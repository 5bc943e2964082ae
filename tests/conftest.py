"""Shared test setup: 8 simulated CPU devices, offline hubs, absl flags, a compilation cache.

Environment variables must be set before jax is imported anywhere, hence module level.
"""

import os
import subprocess
import sys
import tempfile

# LLVM's optimisation of the generated CPU code is most of a tiny program's compile time and
# buys nothing at test sizes: level 0 cuts compile-bound files by about a third. XLA's HLO
# passes still run, and every test passes at either level (its tolerances hold; the exact
# resume and bit-equality tests compare runs made at the same level).
# LEANPO_TEST_XLA_OPT_LEVEL="" keeps XLA's default; the persistent cache keys on the flags.
_OPT_LEVEL = os.environ.get("LEANPO_TEST_XLA_OPT_LEVEL", "0")
TEST_XLA_FLAGS = f"--xla_backend_optimization_level={_OPT_LEVEL}" if _OPT_LEVEL else ""
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS, "--xla_force_host_platform_device_count=8"]
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

# Grain workers and library entry points read absl flags; pytest never parses them.
flags.FLAGS.mark_as_parsed()

# Compiles dominate CPU test time; a cache folder shared by runs on this machine roughly halves
# repeated compiles. It lives in the system temp folder, never in the checkout.
COMPILATION_CACHE_DIR = os.environ.get(
    "LEANPO_TEST_COMPILATION_CACHE", os.path.join(tempfile.gettempdir(), "leanpo_jax_test_jit_cache")
)
jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(*, num_devices=None, env=None):
    """The environment of a CLI child process: this repo first on PYTHONPATH, the tests'
    compilation cache (most CLI runs compile programs an earlier run already compiled: a tiny
    training run starts in ~19 s instead of ~39 s), and `XLA_FLAGS` holding only the tests'
    optimisation level, so the child sees one CPU device (faster start, smaller compiles) unless
    `num_devices` asks for simulated ones."""
    child_env = dict(os.environ)
    flags = [TEST_XLA_FLAGS] if TEST_XLA_FLAGS else []
    if num_devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={int(num_devices)}")
    child_env.pop("XLA_FLAGS", None)
    if flags:
        child_env["XLA_FLAGS"] = " ".join(flags)
    child_env["PYTHONPATH"] = os.pathsep.join(
        [REPO_ROOT] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    child_env.setdefault("JAX_COMPILATION_CACHE_DIR", COMPILATION_CACHE_DIR)
    child_env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    child_env.update(env or {})
    return child_env


def run_cli(args, *, num_devices=None, env=None, timeout=600, check=True, cwd=None):
    """Runs `python ARGS` in a subprocess (environment: `cli_env`), returning the
    CompletedProcess (text output)."""
    child_env = cli_env(num_devices=num_devices, env=env)
    proc = subprocess.run(
        [sys.executable, *args], env=child_env, cwd=cwd or REPO_ROOT, capture_output=True,
        text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command {' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout}"
            f"\n--- stderr ---\n{proc.stderr}"
        )
    return proc


def sigkill_after_lines(argv, path, n, *, timeout=300.0):
    """Starts `argv` (environment: `cli_env`) and SIGKILLs it once `path` holds `n` complete
    lines (or it ended, or `timeout` passed): a kill at an arbitrary point of a run that writes
    a JSONL file -> (exit code, its stdout and stderr)."""
    import signal
    import time

    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(argv, env=cli_env(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(path):
                with open(path, "rb") as f:
                    if f.read().count(b"\n") >= n:
                        break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=60)
        log.seek(0)
        return code, log.read()


@pytest.fixture(name="run_cli")
def run_cli_fixture():
    """The `run_cli` helper as a fixture."""
    return run_cli


def saved_arrays(workdir, step):
    """{pytree path: array} of the TrainState saved at checkpoint `step` of a training run."""
    import numpy as np
    import orbax.checkpoint as ocp

    tree = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def cut_back_run(full, cut, step, last):
    """A copy of the run in `full` at `cut` as it stood at checkpoint `step` of a run that ended at
    `last`: later checkpoint, metrics rows and final artifacts removed (to resume it)."""
    import json
    import shutil

    from leanpo_jax.train.metrics_log import read_metrics

    shutil.copytree(full, cut)
    for name in (f"checkpoints/{last}", "hf", "train_summary.json", "training_curves.png"):
        path = os.path.join(cut, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    kept = [r for r in read_metrics(cut) if r["step"] <= step]
    with open(os.path.join(cut, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)


def first_triplets(triplets: str, tmp_path, n: int = 2):
    """The first `n` lines of a triplets file written to tmp_path/two.jsonl -> (path, lines)."""
    path = str(tmp_path / "two.jsonl")
    with open(triplets) as f:
        rows = f.readlines()[:n]
    with open(path, "w") as f:
        f.writelines(rows)
    return path, rows
