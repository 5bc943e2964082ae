"""Training logs in the workdir: metrics.jsonl, TensorBoard events, the end-of-run PNG.

metrics.jsonl holds one JSON object per logged step, `{"step": k, name: value, ...}`; train
rows use the docs/loss.md §3 names, eval rows `eval/...`, probe rows `probe/...` (these live in rows
of their own step with a "kind" field). On resume `MetricsLog(..., resume_step=s)` drops every
row after step s first, so the file has one row per step and kind however often a run restarts.
Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional

METRICS_FILENAME = "metrics.jsonl"
PLOT_FILENAME = "training_curves.png"


def _clean(value):
    """JSON-safe scalars: NaN/Inf become null (JSON has no NaN)."""
    value = float(value) if value is not None else None
    return None if value is None or not math.isfinite(value) else value


def read_metrics(workdir: str) -> List[Dict]:
    path = os.path.join(workdir, METRICS_FILENAME)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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


def plot_curves(workdir: str, *, title: str = "") -> Optional[str]:
    """PNG of log-probs (train and, if present, probe) and reward margins over steps -> its path
    (None when there is nothing to plot)."""
    rows = read_metrics(workdir)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, label in (("logps/chosen", "chosen"), ("logps/rejected", "rejected")):
        axes[0].plot(*_series(rows, key), label=f"train {label}")
        xs, ys = _series(rows, f"probe/{key}", "probe")
        if xs:
            axes[0].plot(xs, ys, "o--", label=f"probe {label}")
    axes[0].set_title("summed log π(y) per response")
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        axes[1].plot(*_series(rows, key), label=key.split("/")[1])
    axes[1].set_title("rewards")
    axes[2].plot(*_series(rows, "loss"), label="loss")
    axes[2].plot(*_series(rows, "loss/preference"), label="preference")
    axes[2].set_title("loss")
    for ax in axes:
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(workdir, PLOT_FILENAME)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
