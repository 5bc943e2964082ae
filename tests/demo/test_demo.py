"""The demo end to end at smoke-test sizes (`--fast`): every stage runs through the real code
paths and writes the report, the plots and a summary with finite numbers; it prints one line
per stage and shows the trainer's progress bar."""

import json
import math
import os
import re

from conftest import run_cli

from leanpo_jax.demo import run


def test_every_demo_training_config_shows_the_progress_bar(tmp_path):
    paths = {"tokenizer": str(tmp_path), "sft_triplets": "sft.jsonl", "root": str(tmp_path), "counts": {"sft": 40},
             "sft_hf": str(tmp_path), "probe_pairs": "probe.jsonl"}
    configs = [run.sft_config(run.FAST, paths), run.generation_config(run.FAST, paths),
               *(run.preference_config(run.FAST, paths, m, "pairs.jsonl", 20) for m in run.METHODS)]
    assert all(c.logging.progress_bar for c in configs)
    assert run.config_shapes(run.FAST, paths) == {"sft_prompt_text_tokens": run.SFT_PROMPT_TEXT_TOKENS,
                                                  "prompt_text_tokens": 48, "response_tokens": 16}


def test_fast_demo_writes_report_plots_and_summary(tmp_path):
    workdir = str(tmp_path / "demo")
    proc = run_cli(["-m", "leanpo_jax.demo", f"--workdir={workdir}", "--fast"], timeout=900)
    assert "held-out accuracy" in proc.stdout
    # One line per stage, in order, each with its seconds; the trainer's bar on stderr.
    stage_lines = re.findall(r"^\[demo\] stage (\d)/(\d) (\w+): (\d+\.\d) s", proc.stdout, re.M)
    assert [(int(i), int(n), name) for i, n, name, _ in stage_lines] == [
        (i + 1, len(run.STAGES), name) for i, name in enumerate(run.STAGES)]
    assert re.search(r"train: +100%.*\b6/6\b", proc.stderr), proc.stderr[-2000:]
    summary = json.load(open(os.path.join(workdir, "demo_summary.json")))
    for method in ("dpo", "simpo", "leanpo"):
        for key in ("logps_chosen", "logps_rejected"):
            start, end = summary[method][key]
            assert math.isfinite(start) and math.isfinite(end) and start < 0 and end < 0
    assert set(summary["accuracy"]) == set(summary["benchmark_accuracy"]) == {"sft", "dpo", "simpo", "leanpo"}
    assert all(0.0 <= a <= 1.0 for a in summary["accuracy"].values())
    report = open(os.path.join(workdir, "demo_report.md"), encoding="utf-8").read()
    for needle in ("Wall time per stage", "Held-out evaluation", "Probe-set likelihoods", "What mattered",
                   "| identical pairs | winner > loser (non-identical) |"):
        assert needle in report
    pairs = summary["pairs"]
    assert pairs["generated"] == pairs["kept"] + pairs["identical"]
    wins = pairs["winner_above_loser_non_identical"]
    assert f"winner > loser over the kept pairs: {wins['count']}/{pairs['kept']}" in report
    assert "## Embedded benchmark (Video-MME format, held-out videos)" in report
    # Each model's benchmark run through leanpo_jax.eval: every held-out question has a result row.
    for name in ("sft", "dpo", "simpo", "leanpo"):
        scores = json.load(open(os.path.join(workdir, "benchmark", name, "scores.json")))["videomme"]
        assert scores["total"] == 3 * run.FAST.heldout_videos and scores["skipped"] == 0
        assert scores["accuracy"] == summary["benchmark_accuracy"][name]
    for png in ("demo_likelihoods.png", "demo_leanpo_rewards.png"):
        assert os.path.getsize(os.path.join(workdir, png)) > 10_000
    # The probe set was scored by the preference runs through the trainer (metrics.jsonl rows).
    rows = [json.loads(line) for line in open(os.path.join(workdir, "leanpo", "metrics.jsonl"))]
    assert sum(r.get("kind") == "probe" for r in rows) >= 2
