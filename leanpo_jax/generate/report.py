"""The reward-trustworthiness report of a pairs file (docs/loss.md §5.5).

Mean average log-prob (the LeanPO reward / β) of winner, loser and GT answer under the
generating model, the share of pairs whose winner scores above its loser, and the pairs whose
chosen and rejected texts are identical (no preference signal: flagged, counted).
"""

from __future__ import annotations

import json
import math
from typing import Dict, List, Optional


def _mean(values: List[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def build_report(rows: List[Dict], *, failed: int = 0, failed_by_reason: Optional[Dict] = None) -> Dict:
    """Summary of generated rows (fields chosen_avg_logp, rejected_avg_logp, answer_avg_logp)."""
    pairs = len(rows)
    wins = sum(1 for r in rows if r["chosen_avg_logp"] > r["rejected_avg_logp"])
    identical = [r["id"] for r in rows if r.get("identical")]
    return {
        "pairs": pairs, "failed": failed, "failed_by_reason": dict(failed_by_reason or {}),
        "mean_avg_logp": {"winner": _mean([r["chosen_avg_logp"] for r in rows]),
                          "loser": _mean([r["rejected_avg_logp"] for r in rows]),
                          "gt_answer": _mean([r.get("answer_avg_logp") for r in rows])},
        "winner_above_loser": wins / pairs if pairs else None,
        "identical_pairs": len(identical), "identical_ids": identical[:50],
    }


def format_report(report: Dict) -> str:
    """The printed table."""
    def f(x):
        return "   n/a" if x is None else f"{x:7.3f}"

    m = report["mean_avg_logp"]
    share = report["winner_above_loser"]
    lines = [
        "| data | avg_logp winner | avg_logp loser | GT answer | winner > loser | identical |",
        "|---|---|---|---|---|---|",
        f"| self-generated ({report['pairs']} pairs) | {f(m['winner'])} | {f(m['loser'])} | "
        f"{f(m['gt_answer'])} | {'n/a' if share is None else f'{100 * share:.1f}%'} | "
        f"{report['identical_pairs']} |",
    ]
    if report["failed"]:
        lines.append(f"failed records: {report['failed']} {json.dumps(report['failed_by_reason'])}")
    return "\n".join(lines)
