"""Runs benchmark jobs in this process or one subprocess each, and collects their rows.

A job is a JSON-able dict {"kind": "peak"|"step"|"peer"|"generate"|"data", ...}. Isolated jobs
run as `python -m leanpo_jax.bench.runner '[JOB, ...]'` in a fresh process (JAX jobs one per
process: each has its own peak-memory counter, and an out-of-memory error or a crash costs only
that row; the peer's jobs of one impl share a process, torch frees memory between them). The
child prints one line "BENCH_RESULT <json rows>" per job as it finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import List

MARK = "BENCH_RESULT "
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OutOfMemoryError")


def _settings(job: dict):
    return dict(steps=int(job["steps"]), warmup=int(job["warmup"]))


def run_job(job: dict) -> List[dict]:
    """Runs one job here -> its rows (an error becomes a row with "error" and "oom")."""
    kind = job["kind"]
    try:
        if kind == "peak":
            from leanpo_jax.bench.timing import device_info, matmul_peak_tflops

            tflops = matmul_peak_tflops(size=int(job["matmul_size"]), dtype=job["dtype"])
            return [dict(what="peak", name=f"matmul {job['matmul_size']}^3 {job['dtype']}", impl="leanpo_jax",
                         layout="-", peak_tflops=tflops, **device_info())]
        if kind == "step":
            from leanpo_jax.bench.shapes import StepShape
            from leanpo_jax.bench.step_bench import run_step

            return [run_step(StepShape(**job["shape"]), job["layout"], dtype=job["dtype"],
                             attention=job["attention"], compile_only=bool(job.get("compile_only")),
                             **_settings(job))]
        if kind == "peer":
            from leanpo_jax.bench.shapes import StepShape
            from leanpo_jax.bench.torch_peer import run_peer

            return [run_peer(StepShape(**job["shape"]), job["impl"], **_settings(job))]
        if kind == "generate":
            from leanpo_jax.bench.generate_bench import GenerateShape, run_generate

            return run_generate(GenerateShape(**job["shape"]), dtype=job["dtype"], attention=job["attention"],
                                **_settings(job))
        if kind == "data":
            from leanpo_jax.bench.data_bench import DataShape, run_data

            return run_data(DataShape(**job["shape"]))
        raise ValueError(f"unknown benchmark job kind {kind!r}")
    except Exception as e:  # noqa: BLE001 - one failed row must not end the run
        traceback.print_exc()
        text = repr(e)
        return [dict(row_keys(job), error=text[-500:], oom=any(m in text for m in OOM_MARKERS))]


def row_keys(job: dict) -> dict:
    """The identifying keys (what, name, layout, impl) of `job`'s row, for error rows."""
    shape = job.get("shape") or {}
    impl = job.get("impl", "leanpo_jax")
    return dict(what=job["kind"] if job["kind"] != "peer" else "step", name=shape.get("name", job["kind"]),
                layout=job.get("layout", "naive" if job["kind"] == "peer" else "-"), impl=impl)


def run_isolated(jobs: List[dict], *, timeout: float) -> List[dict]:
    """Runs `jobs` one after another in ONE fresh Python process (its log goes to our stderr)
    -> their rows; jobs that did not report (crash, timeout) get an error row each."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "leanpo_jax.bench.runner", json.dumps(jobs)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    rows: List[dict] = []
    done = 0
    # Read line by line so a run cut short keeps the rows it reported; a watchdog kills the
    # process group at the deadline (readline would block forever on a hung child).
    timer = threading.Timer(timeout, lambda: _kill(proc))
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith(MARK):
                rows += json.loads(line[len(MARK):])
                done += 1
            else:
                print(line, end="", file=sys.stderr)
        proc.wait()
    finally:
        timer.cancel()
    seconds = time.perf_counter() - start
    why = (f"timed out after {timeout:.0f} s" if seconds >= timeout - 1 else
           f"the process exited with code {proc.returncode} after {seconds:.0f} s before reporting")
    for job in jobs[done:]:
        rows.append(dict(row_keys(job), error=why, oom=proc.returncode in (-9, 137) and seconds < timeout - 1))
    return rows


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    for job in json.loads(sys.argv[1]):
        print(MARK + json.dumps(run_job(job)), flush=True)
