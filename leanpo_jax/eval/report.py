"""The outputs of a benchmark run besides results.jsonl: scores.json, report.md, accuracy.png.

scores.json holds one entry per task evaluated into the folder ({task: scores}, scores as
eval/scoring.py computes them plus the run's settings); report.md renders every entry; the
chart shows each task's per-group accuracies. All three are rewritten (atomically) after every
run from the rows of results.jsonl, so they always describe the whole file.
"""

from __future__ import annotations

import json
import os
from typing import Dict

SCORES, REPORT, CHART = "scores.json", "report.md", "accuracy.png"


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def read_scores(out_dir: str) -> Dict:
    path = os.path.join(out_dir, SCORES)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def group_tables(scores: Dict) -> Dict[str, Dict[str, Dict]]:
    """{group field: {value: {"accuracy", "correct", "total"}}} of a task's scores."""
    return {field: table for field, table in (scores.get("groups") or {}).items() if table}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def format_report(all_scores: Dict) -> str:
    lines = ["# Benchmark evaluation", ""]
    for task, s in sorted(all_scores.items()):
        st = s.get("settings", {})
        lines += [f"## {task}", "",
                  f"- headline ({s.get('headline', 'accuracy')}): **{_pct(s.get(s.get('headline', 'accuracy')))} %** "
                  f"over {s.get('total', 0)} questions ({s.get('correct', 0)} correct)",
                  f"- accuracy (micro): {_pct(s.get('accuracy'))} %",
                  f"- not evaluated, counted as wrong: {s.get('skipped', 0)}"
                  + (f" ({', '.join(f'{k}: {v}' for k, v in sorted((s.get('skipped_by_reason') or {}).items()))})"
                     if s.get("skipped") else ""),
                  f"- answers with no parsable letter: {s.get('unparsed', 0)}"
                  + (f", given a seeded random letter: {s.get('fallback', 0)}" if s.get("fallback") else ""),
                  f"- extractor: `{st.get('extractor', '?')}`; post prompt: {st.get('post_prompt', '?')!r}; "
                  f"max new tokens {st.get('max_new_tokens', '?')}, greedy",
                  f"- model: `{st.get('model', '?')}`; frames: {st.get('num_frames', '?')} at "
                  f"{'x'.join(map(str, st.get('frame_size', [])))} ({st.get('frame_sampling', '?')} sampling, "
                  f"fps_sampling {st.get('fps_sampling', '?')}), {st.get('video_tokens', '?')} video tokens",
                  f"- data: `{st.get('data', '?')}`", ""]
        for field, table in group_tables(s).items():
            lines += [f"| {field} | accuracy % | correct | total |", "|---|---:|---:|---:|"]
            lines += [f"| {value} | {_pct(v.get('accuracy'))} | {v.get('correct', 0)} | {v.get('total', 0)} |"
                      for value, v in sorted(table.items())]
            lines.append("")
    return "\n".join(lines)


def write_chart(path: str, all_scores: Dict) -> None:
    """One horizontal bar per (task, group field, value): its accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = [], []
    for task, s in sorted(all_scores.items()):
        labels.append(f"{task}: overall")
        values.append(100 * (s.get("accuracy") or 0.0))
        for field, table in group_tables(s).items():
            for value, v in sorted(table.items()):
                labels.append(f"{task}: {field}={value}")
                values.append(100 * (v.get("accuracy") or 0.0))
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(labels) + 1.2))
    ax.barh(range(len(labels)), values, color="#4c72b0")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy %")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(out_dir: str, task: str, scores: Dict) -> Dict:
    """Merges `task`'s scores into OUT/scores.json and rewrites report.md and the chart."""
    all_scores = read_scores(out_dir)
    all_scores[task] = scores
    _atomic_write(os.path.join(out_dir, SCORES), json.dumps(all_scores, indent=2, sort_keys=True))
    _atomic_write(os.path.join(out_dir, REPORT), format_report(all_scores))
    write_chart(os.path.join(out_dir, CHART), all_scores)
    return all_scores
