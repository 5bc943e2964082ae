"""The reward-trustworthiness report of a pairs file (docs/loss.md §5.5).

Mean average log-prob (the LeanPO reward / β) of winner, loser and GT answer under the
generating model; the pairs whose chosen and rejected texts are identical (no preference
signal: counted, listed); and winner > loser over the other pairs. Identical pairs score equal
(models.scoring ties them), so they are no evidence either way and stay out of that share;
the share over every pair is kept under a name that says so.
"""

from __future__ import annotations

import json
import math
from typing import Dict, List, Optional


def _mean(values: List[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _winner_above_loser(row: Dict) -> bool:
    return row["chosen_avg_logp"] > row["rejected_avg_logp"]


def build_report(rows: List[Dict], *, failed: int = 0, failed_by_reason: Optional[Dict] = None) -> Dict:
    """Summary of generated rows (fields chosen_avg_logp, rejected_avg_logp, answer_avg_logp,
    identical) -> {pairs, failed, failed_by_reason, mean_avg_logp {winner, loser, gt_answer},
    identical_pairs, identical_ids (the first 50), non_identical_pairs,
    winner_above_loser_non_identical {count, share (None without such a pair)},
    winner_above_loser_all_pairs (share over every pair, identical ones included)}."""
    pairs = len(rows)
    identical = [r["id"] for r in rows if r.get("identical")]
    differing = [r for r in rows if not r.get("identical")]
    wins = sum(1 for r in differing if _winner_above_loser(r))
    return {
        "pairs": pairs, "failed": failed, "failed_by_reason": dict(failed_by_reason or {}),
        "mean_avg_logp": {"winner": _mean([r["chosen_avg_logp"] for r in rows]),
                          "loser": _mean([r["rejected_avg_logp"] for r in rows]),
                          "gt_answer": _mean([r.get("answer_avg_logp") for r in rows])},
        "identical_pairs": len(identical), "identical_ids": identical[:50],
        "non_identical_pairs": len(differing),
        "winner_above_loser_non_identical": {"count": wins, "share": wins / len(differing) if differing else None},
        "winner_above_loser_all_pairs": sum(map(_winner_above_loser, rows)) / pairs if pairs else None,
    }


def format_share(count: int, total: int) -> str:
    """'k/n (x.x%)', or 'n/a' when there is nothing to count."""
    return f"{count}/{total} ({100 * count / total:.1f}%)" if total else "n/a"


def format_report(report: Dict) -> str:
    """The printed table (winner > loser over the non-identical pairs, next to the identical count)."""
    def f(x):
        return "   n/a" if x is None else f"{x:7.3f}"

    m = report["mean_avg_logp"]
    wins = report["winner_above_loser_non_identical"]["count"]
    lines = [
        "| data | avg_logp winner | avg_logp loser | GT answer | identical pairs | winner > loser (non-identical) |",
        "|---|---|---|---|---|---|",
        f"| self-generated ({report['pairs']} pairs) | {f(m['winner'])} | {f(m['loser'])} | "
        f"{f(m['gt_answer'])} | {report['identical_pairs']} | {format_share(wins, report['non_identical_pairs'])} |",
    ]
    if report["failed"]:
        lines.append(f"failed records: {report['failed']} {json.dumps(report['failed_by_reason'])}")
    return "\n".join(lines)
