"""`python -m leanpo_jax.eval --model HF_DIR --task videomme --data FILE --video-root DIR --out OUT_DIR`.

    (or several in one run: --tasks videomme,mlvu --data VMME.parquet,MLVU.json --video-root V1,V2)

Console script `leanpo-eval`. Tasks: videomme, mlvu, longvideobench, nextqa (multiple choice)
and mcq (your own JSONL: id, video, question, options, answer); the files are read locally
(parquet, json, jsonl), never downloaded. The model's HF folder decides the family, frame size,
chat template and tokenizer; frames per video are data.num_frames (`--config.data.num_frames=32`;
`--config FILE` for a whole config; without one every key has its default). Every other setting
is a key of eval.benchmark (`--config.eval.benchmark.extractor=lmms-eval-2026`); the flags below
override their keys. Writes OUT/results.jsonl (one row per question, appended and fsynced: rerun
the same command after a kill and it continues), scores.json, report.md and accuracy.png.
Exit codes: 0 done, 1 an error.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from leanpo_jax.console import begin_absl_main, quiet_missing_torch_advice

quiet_missing_torch_advice()  # before anything imports transformers

from leanpo_jax import config_schema

_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT, "Config file (model, data and eval.benchmark "
                                          "blocks); default: every key at its default.", lock_config=True)
flags.DEFINE_string("model", None, "The model's HF folder (sets model.init_from); default: the config's model.")
flags.DEFINE_string("task", None, "Benchmark name (eval.benchmark.task).")
flags.DEFINE_list("tasks", None, "Several benchmarks in one run (one model load), e.g. videomme,mlvu: --data "
                  "then names one file per task and --video-root one folder per task (or one for all), "
                  "comma-separated in the same order; all write into --out.")
flags.DEFINE_string("data", None, "The benchmark's file (parquet, json or jsonl) or a folder of them, read in "
                    "name order (eval.benchmark.data).")
flags.DEFINE_string("video-root", None, "Folder of the videos (eval.benchmark.video_root).")
flags.DEFINE_string("out", None, "Output folder (results.jsonl, scores.json, report.md, accuracy.png).")
flags.DEFINE_integer("max-items", None, "Only the first N rows (eval.benchmark.max_items).")
flags.DEFINE_string("extractor", None, "lmms-eval-2024 or lmms-eval-2026 (eval.benchmark.extractor).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")

_OVERRIDES = {"task": "task", "data": "data", "video-root": "video_root", "max-items": "max_items",
              "extractor": "extractor"}


def _main(argv) -> None:
    begin_absl_main(argv)
    from leanpo_jax.eval.report import format_report, read_scores
    from leanpo_jax.eval.run import run_tasks

    config = _CONFIG.value
    with config.unlocked():
        if flags.FLAGS.model:
            config.model.init_from = flags.FLAGS.model
        for flag, key in _OVERRIDES.items():
            value = flags.FLAGS[flag].value
            if flags.FLAGS.tasks and flag in ("data", "video-root"):
                continue  # per task: _benchmarks
            if value is not None:
                config.eval.benchmark[key] = value
    out = flags.FLAGS.out
    try:
        results = run_tasks(config, _benchmarks(config), out, progress=flags.FLAGS.progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"leanpo-eval: error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(format_report(read_scores(out)), flush=True)
    for task, result in results.items():
        print(f"leanpo-eval: {task}: {result['evaluated_this_run']} questions answered this run, {result['total']} "
              f"in {os.path.join(out, 'results.jsonl')}; {result['seconds_this_run']} s", flush=True)


def _benchmarks(config):
    """--tasks with its per-task --data / --video-root lists -> run_tasks' list; without
    --tasks the one benchmark of the config (and the flags above)."""
    names = flags.FLAGS.tasks
    if not names:
        return [{}]
    if flags.FLAGS.task:
        raise ValueError("give --task or --tasks, not both")
    data = (flags.FLAGS.data or "").split(",")
    roots = (flags.FLAGS["video-root"].value or "").split(",")
    if len(data) != len(names):
        raise ValueError(f"--tasks names {len(names)} tasks but --data {len(data)} files: give one file per task, "
                         "comma-separated in the same order")
    if len(roots) not in (1, len(names)):
        raise ValueError(f"--video-root: give one folder for all {len(names)} tasks or one per task "
                         f"(got {len(roots)})")
    roots = roots * len(names) if len(roots) == 1 else roots
    return [{"task": t, "data": d, "video_root": r} for t, d, r in zip(names, data, roots)]


def main() -> None:
    """Console-script entry point (`leanpo-eval`)."""
    flags.mark_flags_as_required(["out"])
    app.run(_main, flags_parser=config_schema.cli_flags_parser("leanpo-eval", flags_module=__name__))


if __name__ == "__main__":
    main()
