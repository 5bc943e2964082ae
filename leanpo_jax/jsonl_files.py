"""JSON-lines files that a killed process may have left with a torn last line.

    removed = repair_torn_tail(path)   # before appending again: cut a partial last line
    rows = read_jsonl(path)            # every row; a torn last line is left out, any other
                                       # unreadable line is a ValueError naming path:line

A kill (or power cut) during an append can only damage the line being written, the last one:
it lacks its newline, or (zero-filled blocks) does not parse. Everything before it is intact.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List


def _torn_tail_start(data: bytes) -> int:
    """Offset where a torn last line starts (len(data) when the last line is whole)."""
    if data and not data.endswith(b"\n"):
        return data.rfind(b"\n") + 1
    start = data.rfind(b"\n", 0, max(len(data) - 1, 0)) + 1
    try:
        if data[start:].strip():
            json.loads(data[start:])
    except ValueError:
        return start
    return len(data)


def repair_torn_tail(path: str) -> int:
    """Truncates an unterminated or unparsable last line of `path`; returns the bytes removed."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        data = f.read()
    keep = _torn_tail_start(data)
    if keep != len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
    return len(data) - keep


def read_jsonl(path: str) -> List[Dict]:
    """The rows of `path` ([] when absent); a torn last line is ignored (not removed)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    rows = []
    for number, line in enumerate(data[:_torn_tail_start(data)].decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err}); a damaged log line "
                             "before the last one is not a torn append: fix or delete the line") from None
    return rows
