"""`python -m leanpo_jax.generate --config CONFIG --input TRIPLETS.jsonl --video-root DIR --output PAIRS.jsonl`.

Console script `leanpo-generate`. Uses the config's `model` (init_from: the SFT model's HF
folder; unset: seeded random init of the preset), `data` (frames, tokenizer, lengths used to
score the pairs as training sees them) and `generate` blocks. Resumable: rerun the same command
after a crash; rows already in PAIRS.jsonl are kept and their ids skipped (with every id there,
the model is not even built), and the rerun writes the rows an uninterrupted run would have.
Exit codes: 0 done (also when nothing was left to do), 1 an error.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from leanpo_jax.console import begin_absl_main, quiet_missing_torch_advice

quiet_missing_torch_advice()  # before anything imports transformers

from leanpo_jax import config_schema

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with model, data and generate blocks.",
                                          lock_config=True)
flags.DEFINE_string("input", None, "Triplets JSONL {id, video, prompt, answer}.")
flags.DEFINE_string("video-root", "", "Folder the records' video paths are relative to (default: the input's folder).")
flags.DEFINE_string("output", None, "Pairs JSONL to write (appended; resumable).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def _main(argv) -> None:
    begin_absl_main(argv)
    from leanpo_jax.generate import report as report_lib
    from leanpo_jax.generate.self_generate import SelfGenerator

    config = _CONFIG.value
    if "generate" not in config:
        print("leanpo-generate: error: the config has no `generate` block (see configs/tiny.py)", file=sys.stderr)
        sys.exit(1)
    try:
        generator = SelfGenerator(config)
        report = generator.run(flags.FLAGS.input, flags.FLAGS.output, video_root=flags.FLAGS["video-root"].value,
                               progress=flags.FLAGS.progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"leanpo-generate: error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(report_lib.format_report(report), flush=True)
    if not report["attempted_this_run"]:
        print(f"leanpo-generate: nothing left to do: every readable record of {flags.FLAGS.input} is already in "
              f"{flags.FLAGS.output} (the model was not built)", flush=True)
    print(f"leanpo-generate: {report['written_this_run']} new rows ({report['pairs']} in {flags.FLAGS.output}), "
          f"{report['failed']} failed, {report['seconds']} s", flush=True)


def main() -> None:
    """Console-script entry point (`leanpo-generate`)."""
    flags.mark_flags_as_required(["config", "input", "output"])
    app.run(_main, flags_parser=config_schema.cli_flags_parser("leanpo-generate", flags_module=__name__))


if __name__ == "__main__":
    main()
