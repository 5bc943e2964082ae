"""Crash-safe, append-only JSONL output: one row per record id, resumable after a kill.

    out = AppendOnlyJsonl(path)     # repairs a torn last line, loads the ids already written
    if record_id not in out.done: out.append({"id": record_id, ...})   # flushed + fsynced

A crash can only tear the line being written (the last one, without its newline); opening the
file again cuts it off, so a restart neither duplicates nor skips a record.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

from leanpo_jax.jsonl_files import read_jsonl, repair_torn_tail


class AppendOnlyJsonl:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.repaired_bytes = repair_torn_tail(self.path)
        self.rows: List[Dict] = read_jsonl(self.path)
        self.done = {row["id"] for row in self.rows}
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, row: Dict) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows.append(row)
        self.done.add(row["id"])

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
