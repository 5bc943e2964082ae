"""demo/report.py on a constructed run (metrics files written by hand): the report gives the
identical-pair count and winner > loser over the other pairs, its "What mattered" quotes the
run, and the rewards plot has a y label and a legend clear of the axes (so of every curve)."""

import json
import os

import numpy as np

from leanpo_jax.demo import findings
from leanpo_jax.demo import report as report_lib
from leanpo_jax.generate.report import build_report

TRIPLETS = [{"id": f"v{i}-colour", "answer": "Every shape is red.", "attributes": {"question": "colour"}}
            for i in range(5)]
# Two identical pairs (dropped) and three that differ, two of them winner > loser.
GENERATED = [
    {"id": "v0-colour", "chosen": "Every shape is red.", "rejected": "Every shape is red.", "identical": True,
     "chosen_avg_logp": -0.2, "rejected_avg_logp": -0.2, "answer_avg_logp": -0.2},
    {"id": "v1-colour", "chosen": "Every shape is blue.", "rejected": "Every shape is blue.", "identical": True,
     "chosen_avg_logp": -0.4, "rejected_avg_logp": -0.4, "answer_avg_logp": -0.3},
    {"id": "v2-colour", "chosen": "Every shape is red.", "rejected": "Every shape is blue.", "identical": False,
     "chosen_avg_logp": -0.1, "rejected_avg_logp": -0.5, "answer_avg_logp": -0.1},
    {"id": "v3-colour", "chosen": "Every shape is red.", "rejected": "Every shape is green.", "identical": False,
     "chosen_avg_logp": -0.2, "rejected_avg_logp": -0.6, "answer_avg_logp": -0.2},
    {"id": "v4-colour", "chosen": "Every shape is green.", "rejected": "Every shape is red.", "identical": False,
     "chosen_avg_logp": -0.7, "rejected_avg_logp": -0.3, "answer_avg_logp": -0.3},
]


def _metrics(workdir, method, chosen):
    os.makedirs(os.path.join(workdir, method))
    rows = [{"kind": "probe", "step": 4 * i, "probe/logps/chosen": c, "probe/logps/rejected": c - 1.5}
            for i, c in enumerate(chosen)]
    rows += [{"step": s, "rewards/chosen": -0.3 + 0.01 * s, "rewards/rejected": -0.5 - 0.05 * s,
              "rewards/margins": 0.2 + 0.06 * s} for s in range(1, 9)]
    with open(os.path.join(workdir, method, "metrics.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _evaluation(correct):
    return {"accuracy": correct / 9, "correct": correct, "total": 9, "gt_logp": -1.5, "gt_logp_avg": -0.15,
            "by_kind": {"count": [1, 3], "colour": [correct - 2, 3], "direction": [1, 3]},
            "examples": [{"question": "What colour?", "answer": "Every shape is red.", "generated": "Every shape is red.",
                          "correct": True}]}


def _benchmark(count, colour, direction):
    """eval.scoring.score's shape for 9 questions (3 per task type), one answer without a letter."""
    groups = {"Counting Problem": count, "Attribute Perception": colour, "Temporal Perception": direction}
    correct = count + colour + direction
    return {"accuracy": correct / 9, "correct": correct, "total": 9, "unparsed": 1, "skipped": 0,
            "settings": {"extractor": "lmms-eval-2024"},
            "groups": {"task_type": {t: {"correct": c, "total": 3, "accuracy": c / 3} for t, c in groups.items()}}}


def _results():
    return findings.DemoResults(
        settings={"train_videos": 10, "sft_steps": 20, "sft_batch": 4, "sft_lr": 1e-3, "pref_steps": 8},
        corpus_counts={"train_videos": 10, "sft": 50},
        shapes={"sft_prompt_text_tokens": 112, "prompt_text_tokens": 48, "response_tokens": 16},
        backdrop={"demo": 0.0039, "synthetic_default": -0.81}, times={"corpus": 1.5, "sft": 9.25},
        generation=build_report(GENERATED), pairs_by_kind=findings.pairs_by_kind(GENERATED, TRIPLETS),
        evals={name: _evaluation(c) for name, c in (("sft", 4), ("dpo", 3), ("simpo", 3), ("leanpo", 5))},
        benchmarks={"sft": _benchmark(1, 3, 0), "dpo": _benchmark(1, 2, 0), "simpo": _benchmark(0, 2, 1),
                    "leanpo": _benchmark(2, 3, 1)})


def test_report_gives_identical_count_and_the_kept_pairs_share(tmp_path):
    workdir = str(tmp_path)
    for method, chosen in (("dpo", [-1.1, -2.0, -3.3]), ("simpo", [-1.1, -2.1, -3.0]), ("leanpo", [-1.1, -1.4, -0.9])):
        _metrics(workdir, method, chosen)
    summary = report_lib.write_report(workdir, _results())
    report = open(os.path.join(workdir, "demo_report.md"), encoding="utf-8").read()
    assert "5 generated, 3 kept (2 with chosen == rejected dropped" in report
    assert "winner > loser over the kept pairs: 2/3 (66.7%)" in report
    assert "| identical pairs | winner > loser (non-identical) |" in report
    assert "| 2 | 2/3 (66.7%) |" in report
    # What mattered quotes this run: 20 steps of 4 over 10 videos, LeanPO's dip and end.
    assert "20 SFT steps of 4, so 8 SFT records per video" in report
    assert "LeanPO's chosen goes -1.10 → -1.40 (its lowest, at step 4) → -0.90, at or above the start" in report
    assert "3 of 5 pairs are kept: 3 colour pairs (2 with the GT as chosen, 1 with it as rejected, 0 with neither)" \
        in report
    # The benchmark table: task types in name order, accuracy over all 9 questions.
    assert ("| model | accuracy | Attribute Perception | Counting Problem | Temporal Perception | no letter in the "
            "answer | skipped (count as wrong) |") in report
    assert "| leanpo | 66.7% (6/9) | 3/3 | 2/3 | 1/3 | 1 | 0 |" in report
    assert "extractor `lmms-eval-2024`" in report
    saved = json.load(open(os.path.join(workdir, "demo_summary.json")))
    assert saved["benchmark_accuracy"] == {"sft": 4 / 9, "dpo": 3 / 9, "simpo": 3 / 9, "leanpo": 6 / 9}
    assert saved["pairs"]["identical"] == 2 and saved["pairs"]["kept"] == 3
    assert saved["pairs"]["winner_above_loser_non_identical"] == {"count": 2, "share": 2 / 3}
    assert saved["leanpo"]["logps_chosen"] == [-1.1, -0.9]
    assert [os.path.basename(p) for p in summary["plots"]] == ["demo_likelihoods.png", "demo_leanpo_rewards.png"]


def test_rewards_plot_has_a_y_label_and_a_legend_clear_of_the_data():
    # Curves that fill the whole axes: any legend inside would cover one of them.
    steps = np.arange(1, 41)
    rows = [{"step": int(s), "rewards/chosen": float(np.sin(s / 3)), "rewards/rejected": float(np.cos(s / 3)),
             "rewards/margins": float(np.sin(s / 3) - np.cos(s / 3))} for s in steps]
    fig = report_lib.rewards_figure(rows)
    try:
        (ax,) = fig.axes
        assert ax.get_ylabel() == "β · average log-prob"
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend = ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == ["chosen", "rejected", "margins"]
        box, axes_box, figure_box = (legend.get_window_extent(renderer), ax.get_window_extent(renderer),
                                     fig.bbox)
        assert not box.overlaps(axes_box)  # outside the plotting area: no curve under it
        # ... and inside the saved image, with the tick labels and x label clear of it too.
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0
        assert not box.overlaps(ax.xaxis.label.get_window_extent(renderer))
        assert not box.overlaps(ax.xaxis.get_tightbbox(renderer))
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
