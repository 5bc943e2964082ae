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


class AppendOnlyJsonl:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.repaired_bytes = self._repair()
        self.rows: List[Dict] = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.rows = [json.loads(line) for line in f if line.strip()]
        self.done = {row["id"] for row in self.rows}
        self._file = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> int:
        """Truncates an unterminated or unparsable last line; returns the bytes removed."""
        if not os.path.exists(self.path):
            return 0
        with open(self.path, "rb") as f:
            data = f.read()
        keep = len(data)
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
        else:
            # A complete-looking last line can still be garbage (e.g. zero-filled blocks after
            # a power cut): it must parse, or it goes too.
            start = data.rfind(b"\n", 0, max(len(data) - 1, 0)) + 1
            try:
                if data[start:].strip():
                    json.loads(data[start:])
            except ValueError:
                keep = start
        if keep != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(keep)
        return len(data) - keep

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
