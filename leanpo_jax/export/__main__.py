"""`python -m leanpo_jax.export --workdir W [--step N] [--out DIR]` (console script `leanpo-export`).

Writes checkpoint N of the training run in W (default: its latest) as an HF folder: weights and
config.json (`save_hf`), preprocessor configs, the training tokenizer's files; the same folder
the trainer writes as W/hf at the end of a run. Default --out: W/hf for the latest step, else
W/hf_step_N. The run's own config is read from the checkpoint; the export runs on this
machine's devices in one process, whatever mesh and process count the run used. The folder is
built beside --out and renamed into place, so --out is complete or absent.
Exit codes: 0 written, 1 an error (no such workdir / step), 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from leanpo_jax.console import quiet_missing_torch_advice

quiet_missing_torch_advice()  # before anything imports transformers

# Keys the export may set differently from the run: where it runs (one process, this machine's
# devices) is not part of what was trained.
LOCAL_KEYS = ("mesh", "distributed")


def run_config(flat: dict):
    """The run's ConfigDict from a checkpoint's flat {"a.b": value} config (lists -> tuples)."""
    import ml_collections

    nested: dict = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = _tuples(value)
    return ml_collections.ConfigDict(nested)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def export(workdir: str, step: Optional[int] = None, out: str = "") -> str:
    """Exports checkpoint `step` (default: the latest) of `workdir` -> the folder written."""
    from leanpo_jax.config_schema import DISTRIBUTED, MESH
    from leanpo_jax.train import checkpoint as ckpt_lib
    from leanpo_jax.train import trainer as trainer_lib

    workdir = os.path.abspath(workdir)
    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    step = ckpt.resolve_step(step)
    latest = ckpt.latest_step()
    config = run_config(ckpt.read_meta(step)["config"])
    ckpt.close()
    config.mesh, config.distributed = MESH.to_config_dict(), DISTRIBUTED.to_config_dict()
    out = os.path.abspath(out or os.path.join(workdir, "hf" if step == latest else f"hf_step_{step}"))
    trainer = trainer_lib.Trainer(config, workdir, changeable=LOCAL_KEYS)
    return trainer.export(step, out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console-script entry point (`leanpo-export`)."""
    p = argparse.ArgumentParser(prog="leanpo-export", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="the training run's folder (with checkpoints/)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--out", default="", help="output folder (default: W/hf, or W/hf_step_N)")
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.join(args.workdir, "checkpoints")):
        print(f"leanpo-export: error: {args.workdir!r} holds no checkpoints/ folder (a training "
              "workdir is expected)", file=sys.stderr)
        return 1
    try:
        out = export(args.workdir, args.step, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"leanpo-export: error: {err}", file=sys.stderr)
        return 1
    print(f"leanpo-export: wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
