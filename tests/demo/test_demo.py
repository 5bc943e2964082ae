"""The demo end to end at smoke-test sizes (`--fast`): every stage runs through the real code
paths and writes the report, the plots and a summary with finite numbers."""

import json
import math
import os

from conftest import run_cli


def test_fast_demo_writes_report_plots_and_summary(tmp_path):
    workdir = str(tmp_path / "demo")
    proc = run_cli(["-m", "leanpo_jax.demo", f"--workdir={workdir}", "--fast"], timeout=900)
    assert "held-out accuracy" in proc.stdout
    summary = json.load(open(os.path.join(workdir, "demo_summary.json")))
    for method in ("dpo", "simpo", "leanpo"):
        for key in ("logps_chosen", "logps_rejected"):
            start, end = summary[method][key]
            assert math.isfinite(start) and math.isfinite(end) and start < 0 and end < 0
    assert set(summary["accuracy"]) == {"sft", "dpo", "simpo", "leanpo"}
    assert all(0.0 <= a <= 1.0 for a in summary["accuracy"].values())
    report = open(os.path.join(workdir, "demo_report.md"), encoding="utf-8").read()
    for needle in ("Wall time per stage", "Held-out evaluation", "Probe-set likelihoods", "winner > loser"):
        assert needle in report
    for png in ("demo_likelihoods.png", "demo_leanpo_rewards.png"):
        assert os.path.getsize(os.path.join(workdir, png)) > 10_000
    # The probe set was scored by the preference runs through the trainer (metrics.jsonl rows).
    rows = [json.loads(line) for line in open(os.path.join(workdir, "leanpo", "metrics.jsonl"))]
    assert sum(r.get("kind") == "probe" for r in rows) >= 2
