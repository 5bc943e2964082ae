"""`python -m leanpo_jax.demo --workdir DIR [--fast]` (console script `leanpo-demo`).

The end-to-end LeanPO demo on the embedded synthetic task (leanpo_jax/demo/run.py): writes
DIR/demo_report.md, DIR/demo_summary.json and the PNGs, and prints the evaluation table.
`--fast` runs every stage with tiny sizes (a smoke test, not the result).
"""

from __future__ import annotations

import time

from absl import app, flags

from leanpo_jax.console import begin_absl_main, quiet_missing_torch_advice

quiet_missing_torch_advice()  # before anything imports transformers

flags.DEFINE_string("workdir", "demo_out", "Output folder (its demo stages are recreated).")
flags.DEFINE_bool("fast", False, "Tiny sizes: check that every stage runs (seconds, not the result).")


def _main(argv) -> None:
    begin_absl_main(argv)
    from leanpo_jax.demo import run

    started = time.perf_counter()
    summary = run.run_demo(flags.FLAGS.workdir, run.FAST if flags.FLAGS.fast else run.default_settings())
    print("\n" + summary["table"])
    print("\n".join(summary["verdict"]))
    print(f"[demo] done in {time.perf_counter() - started:.0f} s; report: {flags.FLAGS.workdir}/demo_report.md",
          flush=True)


def main() -> None:
    """Console-script entry point (`leanpo-demo`)."""
    app.run(_main)


if __name__ == "__main__":
    main()
