"""Append-only JSONL: torn last lines are repaired, ids already written are known."""

import json

from leanpo_jax.generate.output import AppendOnlyJsonl


def test_torn_and_garbage_last_lines_are_cut(tmp_path):
    path = tmp_path / "pairs.jsonl"
    with AppendOnlyJsonl(str(path)) as out:
        out.append({"id": "a", "x": 1})
        out.append({"id": "b", "x": 2})
    good = path.read_bytes()
    path.write_bytes(good + b'{"id": "c", "x"')  # a crash mid-write
    with AppendOnlyJsonl(str(path)) as out:
        assert out.done == {"a", "b"} and out.repaired_bytes == len(b'{"id": "c", "x"')
        out.append({"id": "c", "x": 3})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    path.write_bytes(path.read_bytes() + b"\x00\x00\x00\n")  # zero-filled block after a power cut
    with AppendOnlyJsonl(str(path)) as out:
        assert out.done == {"a", "b", "c"} and out.repaired_bytes == 4
