"""How many skipped records a run tolerates, and how skips are reported on the console.

    budget = SkipBudget.from_config(config.data, planned_records)
    budget.verdict(read, skipped, reasons, path)   # None, or why the run must stop
    describe_skips(read, skipped, reasons, path)   # "3 of 40 records skipped (7.5%): ..."

A bad record (missing video, prompt too long, ...) is never lost silently: it is counted by
reason and listed in the skipped-records file. The budget makes a run that is mostly skipping
look wrong: once `min_records` records were read (or every record a shorter run will read),
a skipped share above `data.max_skipped_fraction` stops the run with a non-zero exit. The
trainer and `leanpo_jax.data.check` apply the same rule.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

TOP_REASONS = 3


def describe_skips(read: int, skipped: int, reasons: Optional[Mapping[str, int]] = None,
                   path: Optional[str] = None) -> str:
    """One line: count and share of the records read, the most common reasons (`reasons`: counts
    by reason, e.g. of this process), where the list of skipped records is."""
    share = 100.0 * skipped / read if read else 0.0
    text = f"{skipped} of {read} records skipped ({share:.1f}%)"
    top = sorted((reasons or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    if skipped and top:
        text += ": " + ", ".join(f"{reason} {count}" for reason, count in top[:TOP_REASONS])
        if len(top) > TOP_REASONS:
            text += f", {len(top) - TOP_REASONS} more reason(s)"
    if skipped and path:
        text += f"; each one (file:line, id, reason, fix) is listed in {path}"
    return text


@dataclasses.dataclass(frozen=True)
class SkipBudget:
    """Stop once `read >= min_records` and skipped / read > max_fraction (1.0 never stops),
    or as soon as every record read was skipped."""

    max_fraction: float
    min_records: int

    @classmethod
    def from_config(cls, data, planned_records: Optional[int] = None) -> "SkipBudget":
        """From data.max_skipped_fraction / data.skip_check_min_records; a run that reads fewer
        records than the minimum (`planned_records`) is judged on all of them."""
        minimum = int(data.skip_check_min_records)
        if planned_records is not None:
            minimum = max(1, min(minimum, int(planned_records)))
        return cls(float(data.max_skipped_fraction), minimum)

    def verdict(self, read: int, skipped: int, reasons: Optional[Mapping[str, int]] = None,
                path: Optional[str] = None) -> Optional[str]:
        """None while within budget, else the message that stops the run (what, why, how to fix)."""
        if read and skipped >= read:
            why = "no record was usable"
        elif read >= self.min_records and skipped > self.max_fraction * read:
            why = (f"more than data.max_skipped_fraction={self.max_fraction:g} of the records read "
                   f"(checked from data.skip_check_min_records={self.min_records} records on)")
        else:
            return None
        return (f"{describe_skips(read, skipped, reasons, path)}: {why}. Fix the records or the "
                "paths they need (data.pairs, data.video_root), or raise data.max_skipped_fraction "
                "(1.0 = never stop) to go on with the usable ones")
