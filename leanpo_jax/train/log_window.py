"""The steps between two logged rows: throughput counters on the host, metric sums on the device.

    window = LogWindow()
    window.add(metrics, tokens=..., pairs=..., flops=...)   # per step; nothing is fetched
    window.add_time(seconds, compile_s=...)
    row = window.row(peak_tflops)                         # one device_get, on log steps only

A row's metric is the window's sum / count (`losses.reduce_metrics`), so a step in which every
pair was skipped (count 0) adds nothing to the means; a metric with no count at all in the
window (every step empty) is None, written as null in metrics.jsonl and left out of TensorBoard
and the curves (never a false 0). `empty_steps` counts the window's steps without a usable
pair. Throughput excludes compile time: the time of a step call that compiled (the first call
for a batch shape) is reported as `compile_s` instead.
"""

from __future__ import annotations

from typing import Dict, Optional

import jax

from leanpo_jax import losses

# "As of this step" counters, not window averages.
LAST_STEP_KEYS = ("optim/skipped", "optim/skipped_total", "optim/lr")
EMPTY_STEPS_KEY = "steps/empty"  # the step's (1 if it had no usable pair else 0, 1)

_add = jax.jit(losses.sum_metrics)  # one dispatch per step, not one per metric


class LogWindow:
    """Accumulates steps until `row()`; see the module docstring."""

    def __init__(self):
        self.tokens = self.pairs = self.steps = 0
        self.flops = self.seconds = self.compile_s = 0.0
        self._sums = None
        self._last = None

    def add(self, metrics: Dict, *, tokens: int, pairs: int, flops: float) -> None:
        self._sums = metrics if self._sums is None else _add(self._sums, metrics)
        self._last = metrics
        self.tokens += tokens
        self.pairs += pairs
        self.flops += flops
        self.steps += 1

    def add_time(self, seconds: float, *, compile_s: float = 0.0) -> None:
        """Wall time of the steps (compile time given separately is kept out of throughput)."""
        self.seconds += max(seconds - compile_s, 0.0)
        self.compile_s += compile_s

    def row(self, peak_tflops: Optional[float], num_devices: int) -> Dict[str, Optional[float]]:
        """The window's metrics (fetched now), throughput and MFU (None without a peak)."""
        sums, last = jax.device_get((self._sums, self._last))
        means = losses.reduce_metrics(sums)
        # None (not reduce_metrics' 0) where nothing was counted.
        row: Dict[str, Optional[float]] = {
            name: float(means[name]) if float(count) > 0 else None
            for name, (_, count) in sums.items() if name != EMPTY_STEPS_KEY}
        for name in LAST_STEP_KEYS:
            row[name] = float(last[name][0])
        row["empty_steps"] = int(round(float(sums[EMPTY_STEPS_KEY][0]))) if EMPTY_STEPS_KEY in sums else 0
        seconds = max(self.seconds, 1e-9)
        row["tokens_per_s"] = self.tokens / seconds
        row["pairs_per_s"] = self.pairs / seconds
        row["step_time_s"] = seconds / max(self.steps, 1)
        if self.compile_s:
            row["compile_s"] = self.compile_s
        row["mfu"] = self.flops / seconds / (peak_tflops * 1e12 * num_devices) if peak_tflops else None
        return row
