"""Demo stage 6: demo_summary.json, demo_report.md and the Figure-1 style PNGs.

start / end = the probe set's mean summed response log-prob at the first and the last scoring.
Every figure in the report is computed from the run (`findings.DemoResults`, the metrics files).
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

from leanpo_jax.demo.findings import DemoResults, what_mattered
from leanpo_jax.generate.report import format_report, format_share
from leanpo_jax.train.metrics_log import read_metrics

METHODS = ("dpo", "simpo", "leanpo")
# demo_summary.json key -> the probe row's metric.
SUMMARY_COLUMNS = {"logps_chosen": "probe/logps/chosen", "logps_rejected": "probe/logps/rejected"}


def _probe(workdir: str, method: str) -> List[Dict]:
    return [r for r in read_metrics(os.path.join(workdir, method)) if r.get("kind") == "probe"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def likelihoods_figure(probes: Dict[str, List[Dict]]):
    """Figure 1 style: probe-set summed log-probs of chosen and rejected, DPO next to LeanPO."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, method in zip(axes, ("dpo", "leanpo")):
        rows = probes[method]
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["probe/logps/chosen"] for r in rows], "o-", label="log π(y_w) chosen")
        ax.plot(steps, [r["probe/logps/rejected"] for r in rows], "s-", label="log π(y_l) rejected")
        ax.set_title(f"{method.upper() if method == 'dpo' else 'LeanPO'}: probe-set summed log-probs")
        ax.set_xlabel("step")
        ax.legend()
    axes[0].set_ylabel("mean summed log-prob")
    fig.tight_layout()
    return fig


def rewards_figure(rows: List[Dict]):
    """LeanPO's train-row rewards (chosen, rejected) and margin per step; the legend sits below
    the axes, so it covers no curve whatever their shape."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.6))
    steps = [r["step"] for r in rows]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        ax.plot(steps, [r[key] for r in rows], label=key.split("/")[1])
    ax.set_title("LeanPO rewards and margin")
    ax.set_xlabel("step")
    ax.set_ylabel("β · average log-prob")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()  # makes room for the legend below the axes
    return fig


def _plots(workdir: str, probes: Dict[str, List[Dict]]) -> List[str]:
    plt = _pyplot()
    train_rows = [r for r in read_metrics(os.path.join(workdir, "leanpo")) if "kind" not in r]
    paths = []
    for name, fig in (("demo_likelihoods.png", likelihoods_figure(probes)),
                      ("demo_leanpo_rewards.png", rewards_figure(train_rows))):
        paths.append(os.path.join(workdir, name))
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def _extractor(benchmarks: Dict[str, Dict]) -> str:
    return ", ".join(sorted({b["settings"]["extractor"] for b in benchmarks.values()}))


def evaluation_table(evals: Dict[str, Dict]) -> str:
    lines = ["| model | held-out accuracy | per question kind | GT log-lik (summed) | GT log-lik (per token) |",
             "|---|---|---|---|---|"]
    for name, e in evals.items():
        kinds = ", ".join(f"{k} {c}/{n}" for k, (c, n) in e.get("by_kind", {}).items())
        lines.append(f"| {name} | {100 * e['accuracy']:.1f}% ({e['correct']}/{e['total']}) | {kinds} | "
                     f"{e['gt_logp']:.3f} | {e['gt_logp_avg']:.4f} |")
    return "\n".join(lines)


def benchmark_table(benchmarks: Dict[str, Dict]) -> str:
    """Per model: the embedded benchmark's micro accuracy, per task type, and the answers no
    letter could be read from (eval.scoring.score's dict per model)."""
    types = sorted({t for b in benchmarks.values() for t in b["groups"].get("task_type", {})})
    lines = [f"| model | accuracy | {' | '.join(types)} | no letter in the answer | skipped (count as wrong) |",
             "|---|---|" + "---|" * len(types) + "---|---|"]
    for name, b in benchmarks.items():
        cells = []
        for t in types:
            g = b["groups"].get("task_type", {}).get(t)
            cells.append(f"{g['correct']}/{g['total']}" if g else "–")
        lines.append(f"| {name} | {100 * b['accuracy']:.1f}% ({b['correct']}/{b['total']}) | {' | '.join(cells)} | "
                     f"{b['unparsed']} | {b['skipped']} |")
    return "\n".join(lines)


def write_report(workdir: str, results: DemoResults) -> Dict:
    """Writes WORKDIR/demo_summary.json, demo_report.md and the PNGs from `results` and the
    preference runs' metrics (WORKDIR/{dpo,simpo,leanpo}) -> the summary, plus times, verdict,
    table and plots."""
    evals, generation = results.evals, results.generation
    probes = {m: _probe(workdir, m) for m in METHODS}
    summary = {m: {key: [probes[m][0][column], probes[m][-1][column]] for key, column in SUMMARY_COLUMNS.items()}
               for m in METHODS}
    summary["accuracy"] = {name: e["accuracy"] for name, e in evals.items()}
    summary["benchmark_accuracy"] = {name: b["accuracy"] for name, b in results.benchmarks.items()}
    wins = generation["winner_above_loser_non_identical"]
    summary["pairs"] = {"generated": results.pairs_generated, "kept": results.pairs_kept,
                        "identical": generation["identical_pairs"],
                        "winner_above_loser_non_identical": wins, "by_kind": results.pairs_by_kind}
    with open(os.path.join(workdir, "demo_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    plots = _plots(workdir, probes)

    def delta(m, k):
        a, b = summary[m][k]
        return f"{a:.2f} → {b:.2f} ({b - a:+.2f})"

    dpo_both_fall = all(summary["dpo"][k][1] < summary["dpo"][k][0] for k in ("logps_chosen", "logps_rejected"))
    lean_holds = summary["leanpo"]["logps_chosen"][1] >= summary["leanpo"]["logps_chosen"][0]
    lean_acc = summary["accuracy"]["leanpo"] >= summary["accuracy"]["sft"]
    verdict = [
        f"- DPO: both likelihoods fall (displacement): **{'yes' if dpo_both_fall else 'no'}**.",
        f"- LeanPO: the chosen likelihood does not fall: **{'yes' if lean_holds else 'no'}**.",
        f"- LeanPO held-out accuracy ≥ SFT's: **{'yes' if lean_acc else 'no'}**.",
    ]
    table = evaluation_table(evals)
    md = [
        "# leanpo_jax demo report", "",
        "Synthetic video QA: 1-4 moving coloured shapes on a grey background; count / colour / "
        "direction questions (what the loser's augmented 2-frame video destroys); one templated "
        "sentence per question naming only the asked attribute, so exact match (after normalising "
        "case, spaces and a final period) needs that one word right. SFT (tower, projector and LLM "
        "from scratch) on the three plain questions of every train video plus one prior-injection "
        "and one reflection prompt and one 4-option letter question per video; pairs "
        "self-generated by the SFT model (winner: GT hints + reflection; loser: plain question on "
        "the augmented 2-frame video); DPO (β 0.1, reference = SFT), SimPO (α 0, λ_sft 0) and "
        "LeanPO (β 2, γ 0.5, α 0.1, λ_sft 0.5) from the same SFT weights with the same pairs, "
        "optimiser, learning rate, steps and seed; tower and projector frozen.", "",
        "## What mattered", "", *what_mattered(results, probes), "",
        "## Settings", "", "```", json.dumps(results.settings, indent=1), "```", "",
        "## Wall time per stage (s)", "", "| stage | seconds |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in results.times.items()], "",
        "## Self-generated pairs", "", format_report(generation), "",
        f"{results.pairs_generated} generated, {results.pairs_kept} kept "
        f"({results.pairs_generated - results.pairs_kept} with chosen == rejected dropped: the two sides score "
        f"equal, no preference signal); winner > loser over the kept pairs: "
        f"{format_share(wins['count'], generation['non_identical_pairs'])}.", "",
        "## Probe-set likelihoods (mean summed log-prob, first → last scoring)", "",
        "| method | chosen | rejected |", "|---|---|---|",
        *[f"| {m} | {delta(m, 'logps_chosen')} | {delta(m, 'logps_rejected')} |" for m in METHODS], "",
        *verdict, "",
        "## Held-out evaluation", "", table, "",
        "Examples (LeanPO):", "", *[f"- Q: {e['question']} GT: {e['answer']} → {e['generated']!r} "
                                     f"({'✓' if e['correct'] else '✗'})" for e in evals["leanpo"]["examples"]], "",
        "## Embedded benchmark (Video-MME format, held-out videos)", "",
        f"Every held-out video's three questions as 4-option Video-MME rows, run through `leanpo-eval`'s code "
        f"path (lmms-eval's Video-MME prompt, greedy, extractor `{_extractor(results.benchmarks)}`); the SFT "
        "mixture holds one such question per train video with its letter as the answer, the preference pairs "
        "none. Per model: WORKDIR/benchmark/<model>/ (results.jsonl, scores.json, report.md).", "",
        benchmark_table(results.benchmarks), "",
        "## Plots", "", *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots], "",
    ]
    with open(os.path.join(workdir, "demo_report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    summary_out = dict(summary, times=results.times, verdict=verdict, table=table, plots=plots)
    return summary_out
