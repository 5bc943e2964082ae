"""Benchmarks against the PyTorch peer: throughput, MFU, memory, compile time.

    python -m leanpo_jax.bench [--what step|data|generate|all] [--size full|tiny] [--peer torch]
                               [--only NAME] [--json FILE]          (console script leanpo-bench)

--what step      the real train step on the LLM-only and video-pair shapes (bench/shapes.py),
                 shared-prefix and naive layouts side by side; --peer torch adds the PyTorch
                 peer (bench/torch_peer.py) on the same shapes in the same run
--what generate  Sampler: encode frames/s, prefill and decode tokens/s
--what data      the grain pipeline on synthetic mp4s: records/s, frames/s
--size tiny      small shapes for CPU smoke tests (the output is checked, not the speed)
--compile-only   step rows from abstract shapes: compile, report XLA's peak-memory estimate and
                 trainable params, run nothing (does a 7B LoRA shape fit? answerable on a CPU)

Rows (--json FILE writes {"meta": ..., "rows": [...]}) carry name, layout, impl (leanpo_jax,
torch-hf, torch-liger), step_s (median of --steps timed calls after --warmup), tokens_per_s
(2 · pairs · (prompt + response) per step for both layouts, as the peer counts), pairs_per_s,
mfu (the row's model FLOPs for the layout it ran, over the dense matmul peak measured at the
start of this run), peak_bytes, compile_s, trainable_params, lora_rank (shapes named "loraR":
adapters only, bf16 base at full size; the peer uses peft); failed rows carry "error" (and "oom").
Full size runs every job in its own process (--isolate auto), so a job's peak memory is its own
and an out-of-memory row does not end the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import List

from leanpo_jax.bench import runner
from leanpo_jax.bench.shapes import step_shapes

WHATS = ("step", "generate", "data")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="leanpo-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--what", default="step", choices=WHATS + ("all",))
    p.add_argument("--size", default="full", choices=("full", "tiny"))
    p.add_argument("--peer", default="none", choices=("none", "torch"))
    p.add_argument("--only", action="append", default=[], help="keep shapes whose name contains this (repeatable)")
    p.add_argument("--layouts", default="shared,naive", help="comma-separated: shared, naive")
    p.add_argument("--steps", type=int, default=None, help="timed calls per row (default 5 full, 2 tiny)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 2 full, 1 tiny)")
    p.add_argument("--dtype", default=None, help="compute dtype (default bfloat16 full, float32 tiny)")
    p.add_argument("--attention", default="auto", help="auto (cudnn on GPU, else XLA's choice), xla or cudnn")
    p.add_argument("--isolate", default="auto", choices=("auto", "yes", "no"),
                   help="one process per job (auto: yes at full size)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per isolated job")
    p.add_argument("--budget", type=float, default=0.0,
                   help="seconds for the whole run; jobs that would start later are skipped (0: none)")
    p.add_argument("--compile-only", action="store_true",
                   help="step rows: compile from abstract shapes and report the memory estimate only")
    p.add_argument("--json", default="", help="write the rows to this file")
    args = p.parse_args(argv)
    layouts = [x for x in args.layouts.split(",") if x]
    bad = [x for x in layouts if x not in ("shared", "naive")]
    if bad or not layouts:
        p.error(f"--layouts {args.layouts!r}: expected a comma-separated subset of shared,naive")
    args.layouts = layouts
    if args.steps is not None and args.steps < 1 or args.warmup is not None and args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def plan(args) -> List[dict]:
    """The jobs of this run, in order: peak, then per step shape ours (each layout) and the
    peer, then generate, then data."""
    tiny = args.size == "tiny"
    common = dict(steps=args.steps or (2 if tiny else 5), warmup=args.warmup if args.warmup is not None else (1 if tiny else 2),
                  dtype=args.dtype or ("float32" if tiny else "bfloat16"), attention=args.attention)
    keep = lambda name: not args.only or any(o in name for o in args.only)  # noqa: E731
    # The MFU denominator; a compile-only run times nothing, so it needs none.
    jobs = [] if args.compile_only else [dict(common, kind="peak", matmul_size=256 if tiny else 8192)]
    whats = WHATS if args.what == "all" else (args.what,)
    if "step" in whats:
        for shape in filter(lambda s: keep(s.name), step_shapes(args.size)):
            d = dataclasses.asdict(shape)
            jobs += [dict(common, kind="step", shape=d, layout=lay, compile_only=args.compile_only)
                     for lay in args.layouts]
            if args.peer == "torch" and not args.compile_only:
                from leanpo_jax.bench.torch_peer import peer_supported

                why = peer_supported(shape)
                if why:
                    print(f"[bench] no peer rows for {shape.name}: {why}", file=sys.stderr)
                else:
                    jobs += [dict(common, kind="peer", shape=d, impl=impl) for impl in _peer_impls()]
    if "generate" in whats:
        from leanpo_jax.bench import generate_bench

        jobs.append(dict(common, kind="generate", shape=dataclasses.asdict(generate_bench.TINY if tiny else generate_bench.FULL)))
    if "data" in whats:
        from leanpo_jax.bench import data_bench

        jobs.append(dict(common, kind="data", shape=dataclasses.asdict(data_bench.TINY if tiny else data_bench.FULL)))
    return jobs


def _peer_impls():
    from leanpo_jax.bench.torch_peer import liger_available

    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("--peer torch needs PyTorch and transformers' PyTorch models: "
                         "pip install torch (CPU: torch==2.13.0), or run without --peer") from None
    impls = ["torch-hf"]
    if liger_available():
        impls.append("torch-liger")
    else:
        print("[bench] liger-kernel not importable: no torch-liger rows", file=sys.stderr)
    return impls


def finish(rows: List[dict]) -> None:
    """MFU from the measured peak; per shape, our rows' ratios to each peer row."""
    peak = next((r.get("peak_tflops") for r in rows if r["what"] == "peak" and "error" not in r), None)
    for r in rows:
        if r["what"] == "step" and "error" not in r:
            r["mfu"] = r["model_flops"] / r["step_s"] / (peak * 1e12) if peak and r["step_s"] else None
    for r in rows:
        if r["what"] != "step" or r["impl"] != "leanpo_jax" or "error" in r or not r["tokens_per_s"]:
            continue
        peers = {p["impl"]: p["tokens_per_s"] for p in rows if p["what"] == "step" and p["name"] == r["name"]
                 and p["impl"] != "leanpo_jax" and "error" not in p}
        r["vs_peer"] = {impl: r["tokens_per_s"] / v for impl, v in peers.items()}
        if peers:
            r["vs_best_peer"] = r["tokens_per_s"] / max(peers.values())


def _fmt(x, scale=1.0, digits=1):
    return "-" if x is None else f"{x * scale:,.{digits}f}"


def format_table(rows: List[dict]) -> str:
    lines = []
    peak = [r for r in rows if r["what"] == "peak"]
    for r in peak:
        lines.append(f"device: {r.get('device_kind', '?')} ({r.get('platform', '?')}), jax {r.get('jax', '?')}; "
                     f"measured {r['name']}: {_fmt(r.get('peak_tflops'))} TFLOP/s" if "error" not in r
                     else f"matmul peak: ERROR {r['error']}")
    head = f"{'what':8} {'name':34} {'layout':8} {'impl':11} {'step ms':>9} {'tokens/s':>11} {'pairs/s':>8} " \
           f"{'MFU %':>6} {'peak GiB':>8} {'compile s':>9}  note"
    lines.append(head)
    for r in rows:
        if r["what"] == "peak":
            continue
        name = r["name"] + (f" [{r['phase']}]" if "phase" in r else "")
        if "error" in r:
            lines.append(f"{r['what']:8} {name:34} {r['layout']:8} {r['impl']:11} "
                         f"{'OOM' if r.get('oom') else 'ERROR'}: {r['error'][:120]}")
            continue
        note = ""
        if r.get("vs_peer"):
            note = " ".join(f"{v:.2f}x {k.split('-')[1]}" for k, v in r["vs_peer"].items())
        if r.get("lora_rank"):
            note = f"{r.get('trainable_params', 0) / 1e6:.1f}M trainable  {note}".rstrip()
        if r["what"] == "data":
            note = f"{r['records_per_s']:.1f} records/s, {r['frames_per_s']:.0f} frames/s, {r['workers']} workers"
        if r.get("phase") == "encode":
            note = f"{r['frames_per_s']:.1f} frames/s"
        lines.append(
            f"{r['what']:8} {name:34} {r['layout']:8} {r['impl']:11} {_fmt(r['step_s'], 1e3, 2):>9} "
            f"{_fmt(r.get('tokens_per_s'), 1, 0):>11} {_fmt(r.get('pairs_per_s'), 1, 2):>8} "
            f"{_fmt(r.get('mfu'), 100):>6} {_fmt(r.get('peak_bytes'), 2**-30, 2):>8} "
            f"{_fmt(r.get('compile_s')):>9}  {note}")
    return "\n".join(lines)


def groups(jobs: List[dict], isolate: bool) -> List[List[dict]]:
    """Jobs in run order, grouped per process: every JAX job alone; each peer impl's jobs of a
    run of consecutive shapes together (after them), since torch frees memory between shapes
    and a process start (torch + transformers import) costs seconds."""
    if not isolate:
        return [[j] for j in jobs]
    out: List[List[dict]] = []
    pending: dict = {}
    for job in jobs:
        if job["kind"] == "peer":
            pending.setdefault(job["impl"], []).append(job)
            continue
        if pending and job["kind"] != "step":  # the step section ended: its peers run now
            out += list(pending.values())
            pending = {}
        out.append([job])
    return out + list(pending.values())


def main(argv=None) -> int:
    args = parse_args(argv)
    isolate = args.isolate == "yes" or (args.isolate == "auto" and args.size == "full")
    if isolate:  # let each job's allocator use most of the device (no-remat 1.5B needs ~70 GiB)
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.94")
    jobs = plan(args)
    rows: List[dict] = []
    start = time.perf_counter()
    for i, group in enumerate(groups(jobs, isolate)):
        elapsed = time.perf_counter() - start
        label = ", ".join(f"{j['kind']} {j.get('shape', {}).get('name', '')} {j.get('layout', j.get('impl', ''))}"
                          for j in group)
        if args.budget and elapsed > args.budget:
            print(f"[bench] skipped (--budget {args.budget:.0f} s spent): {label}", file=sys.stderr)
            rows += [dict(runner.row_keys(j), error=f"skipped: --budget {args.budget:.0f} s spent",
                          oom=False) for j in group]
            continue
        print(f"[bench] {elapsed:6.0f} s  {label}", file=sys.stderr, flush=True)
        if isolate:
            timeout = args.timeout * len(group)
            if args.budget:
                timeout = min(timeout, max(30.0, args.budget + 60 - elapsed))
            new = runner.run_isolated(group, timeout=timeout)
        else:
            new = [row for job in group for row in runner.run_job(job)]
        rows += new
        finish(rows)
        if args.json:  # rewritten after every job: a run cut short keeps what it measured
            write_json(args.json, args, rows, time.perf_counter() - start)
    print(format_table(rows), flush=True)
    failed = [r for r in rows if "error" in r and not r.get("oom")]
    return 1 if failed else 0


def write_json(path: str, args, rows: List[dict], seconds: float) -> None:
    meta = dict(argv=sys.argv[1:], size=args.size, what=args.what, peer=args.peer, seconds=round(seconds, 1),
                date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
