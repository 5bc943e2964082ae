"""`python -m leanpo_jax.train --config configs/tiny.py --workdir DIR [--config.key=value ...]`.

Trains (or resumes) on DIR; see leanpo_jax.train.trainer for what lands there. Console script:
`leanpo-train`. Any config key is set as --config.BLOCK.KEY=VALUE (the keys, their defaults and
ranges: the blocks train/config.py's SCHEMA lists; an unknown key is refused naming the nearest).
Exit codes: 0 done (or nothing to do), 1 error, 3 too many non-finite updates in a row, 4 too many
skipped records (data.max_skipped_fraction), 143 SIGTERM / 130 SIGINT (Ctrl-C): a checkpoint was
saved, rerun the same command to continue.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from leanpo_jax.console import begin_absl_main, quiet_missing_torch_advice

quiet_missing_torch_advice()  # before anything imports transformers

from leanpo_jax import config_schema

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, logs, exports.")


def _main(argv) -> None:
    begin_absl_main(argv, "use --config.key=value overrides")
    from leanpo_jax.train import trainer  # after flag parsing: jax starts on first use

    try:
        summary = trainer.train(_CONFIG.value, _WORKDIR.value)
    except trainer.TrainingStopped as stop:
        print(f"leanpo-train: {stop}", file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except (ValueError, FileNotFoundError, trainer.ckpt_lib.CheckpointWriteError) as err:
        print(f"leanpo-train: error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    last = summary.get("last") or {}
    if summary.get("message"):
        return
    shown = {k: last.get(k) for k in ("loss", "rewards/margins", "tokens_per_s", "pairs_per_s")}
    print(f"leanpo-train: done at step {summary['step']}: " +
          ", ".join(f"{k} {v:.4g}" for k, v in shown.items() if v is not None), flush=True)
    print(f"leanpo-train: data: {summary['data_summary']}", flush=True)


def main() -> None:
    """Console-script entry point (`leanpo-train`)."""
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(_main, flags_parser=config_schema.cli_flags_parser("leanpo-train", flags_module=__name__))


if __name__ == "__main__":
    main()
