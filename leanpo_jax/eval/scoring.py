"""A task's scores from its result rows, in the aggregation the benchmark reports.

    scores = score("videomme", rows)   # rows: results.jsonl rows of that task

Every row counts in the denominator: one that could not be asked (status other than "ok":
missing field, answer outside the options, missing or unreadable video) counts as wrong and is
counted by reason ("skipped_count_as_wrong": true). Figures: micro accuracy overall and per
group field of the task (tasks.TaskSpec.group_fields); the benchmark's headline figure is named
by "headline" (Video-MME: micro accuracy; MLVU: M-avg, the mean of per-task-type accuracies).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Dict, List, Sequence

from leanpo_jax.eval import tasks


def _acc(correct: int, total: int):
    return correct / total if total else None


def group_table(rows: List[Dict], field: str) -> Dict[str, Dict]:
    """{value of groups[field]: {correct, total, accuracy}} over the asked rows."""
    tally: Dict[str, List[int]] = {}
    for r in rows:
        value = (r.get("groups") or {}).get(field)
        if value in (None, ""):
            continue
        t = tally.setdefault(str(value), [0, 0])
        t[0], t[1] = t[0] + int(bool(r["correct"])), t[1] + 1
    return {v: {"correct": c, "total": n, "accuracy": _acc(c, n)} for v, (c, n) in sorted(tally.items())}


def score(task: str, rows: List[Dict]) -> Dict:
    spec = tasks.TASKS[task]
    asked = [r for r in rows if r["status"] == "ok"]
    skipped = Counter(r["status"] for r in rows if r["status"] != "ok")
    correct = sum(bool(r["correct"]) for r in rows)
    out = {"task": task, "total": len(rows), "correct": correct, "accuracy": _acc(correct, len(rows)),
           "asked": len(asked), "skipped": sum(skipped.values()), "skipped_by_reason": dict(sorted(skipped.items())),
           "skipped_count_as_wrong": True, "unparsed": sum(1 for r in asked if not r["parsed"] or r.get("fallback")),
           "fallback": sum(1 for r in asked if r.get("fallback")), "headline": spec.headline,
           "groups": {f: group_table(rows, f) for f in spec.group_fields}}
    if spec.headline == "m_avg":
        table = out["groups"].get("task_type", {})
        accs = [v["accuracy"] for v in table.values() if v["accuracy"] is not None]
        out["m_avg"] = sum(accs) / len(accs) if accs else None
    return out


def fallback_letter(task: str, item_id: str, letters: Sequence[str], seed: int) -> str:
    """The seeded random letter an unparsable answer gets (LongVideoBench's rule), the same for
    an item in every run with this seed."""
    return random.Random(f"{seed}:{task}:{item_id}").choice(list(letters))
