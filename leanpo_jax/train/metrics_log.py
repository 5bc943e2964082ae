"""Training logs in the workdir: metrics.jsonl, TensorBoard events, the end-of-run PNG.

metrics.jsonl holds one JSON object per logged step, `{"step": k, name: value, ...}`; train
rows use the docs/loss.md §3 names, eval rows `eval/...`, probe rows `probe/...` (these live in rows
of their own step with a "kind" field). On resume `MetricsLog(..., resume_step=s)` drops every
row after step s first (and a line torn by a kill), so the file has one row per step and kind
however often a run restarts. A value that does not exist is null: a NaN/Inf, or a metric with
nothing to average (every pair of the window's steps was skipped: `empty_steps` counts them);
null values are left out of TensorBoard and the curves.
Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional

from leanpo_jax.jsonl_files import read_jsonl, repair_torn_tail

METRICS_FILENAME = "metrics.jsonl"
PLOT_FILENAME = "training_curves.png"


def _clean(value):
    """JSON-safe scalars: NaN/Inf become null (JSON has no NaN)."""
    value = float(value) if value is not None else None
    return None if value is None or not math.isfinite(value) else value


def read_metrics(workdir: str) -> List[Dict]:
    """The rows of WORKDIR/metrics.jsonl (a torn last line is left out; `jsonl_files`)."""
    return read_jsonl(os.path.join(workdir, METRICS_FILENAME))


class MetricsLog:
    """Appends rows to WORKDIR/metrics.jsonl and TensorBoard; truncates rows after a resume."""

    def __init__(self, workdir: str, *, resume_step: int = 0, tensorboard: bool = True,
                 enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILENAME)
        self._writer = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        repair_torn_tail(self.path)  # a kill mid-append (metrics are rewritten from the resume step)
        kept = [r for r in read_metrics(workdir) if r.get("step", 0) <= resume_step]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        if tensorboard:
            from tensorboardX import SummaryWriter  # pure Python, no TensorFlow

            # purge_step drops the events a restarted run will write again.
            self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                         purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, values: Dict[str, Optional[float]], *, kind: str = "train") -> Dict:
        row = {"step": int(step)}
        if kind != "train":
            row["kind"] = kind
        row.update({k: _clean(v) for k, v in values.items()})
        if not self.enabled:
            return row
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for key, value in row.items():
                if key not in ("step", "kind") and value is not None:
                    self._writer.add_scalar(key, value, int(step))
            self._writer.flush()
        return row

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _series(rows: List[Dict], key: str, kind: str = "train"):
    pts = [(r["step"], r[key]) for r in rows
           if r.get("kind", "train") == kind and r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _panels(rows: List[Dict]):
    """(title, [(label, xs, ys, style)]) per panel that has data: an SFT run has no rewards."""
    logps = []
    for key, label in (("logps/chosen", "chosen"), ("logps/rejected", "rejected")):
        logps.append((f"train {label}", *_series(rows, key), "-"))
        logps.append((f"probe {label}", *_series(rows, f"probe/{key}", "probe"), "o--"))
    rewards = [(key.split("/")[1], *_series(rows, key), "-")
               for key in ("rewards/chosen", "rewards/rejected", "rewards/margins")]
    loss = [("loss", *_series(rows, "loss"), "-"), ("preference", *_series(rows, "loss/preference"), "-")]
    panels = [("summed log π(y) per response", logps), ("rewards", rewards), ("loss", loss)]
    return [(title, [c for c in curves if c[1]]) for title, curves in panels
            if any(c[1] for c in curves)]


def plot_curves(workdir: str, *, title: str = "") -> Optional[str]:
    """PNG of log-probs (train and, if present, probe), reward margins and losses over steps ->
    its path (None when there is nothing to plot). Panels without data are left out."""
    panels = _panels(read_metrics(workdir))
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (panel_title, curves) in zip(axes[0], panels):
        for label, xs, ys, style in curves:
            ax.plot(xs, ys, style, label=label)
        ax.set_title(panel_title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(workdir, PLOT_FILENAME)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
