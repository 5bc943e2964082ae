"""Records: JSONL index, validation reasons with file:line, duplicate ids, pickling."""

import json
import pickle

import pytest

from leanpo_jax.data import records as R

PAIR = {"id": "a", "video": "v/a.mp4", "prompt": "What moves?", "chosen": "A circle.",
        "rejected": "A square."}
TRIPLET = {"id": "t", "video": "v/t.mp4", "prompt": "What moves?", "answer": "A circle."}
HOUND = {"id": "hound_1", "video": "hound/1", "prompt": "Describe the video.", "answer": "GT answer.",
         "chosen": "Good.", "rejected": "Bad.", "chosen_score": 5.0, "rejected_score": 2.0}


def _write(tmp_path, lines, name="data.jsonl", newline="\n", trailing=True):
    text = newline.join(json.dumps(x) if isinstance(x, dict) else x for x in lines)
    path = tmp_path / name
    path.write_bytes((text + (newline if trailing else "")).encode("utf-8"))
    return str(path)


def _with(**changes):
    rec = dict(PAIR)
    for k, v in changes.items():
        if v is _DROP:
            rec.pop(k)
        else:
            rec[k] = v
    return rec


_DROP = object()


def test_reason_constants_are_one_list():
    assert len(set(R.ALL_REASONS)) == len(R.ALL_REASONS)
    for name in ("MALFORMED_JSON", "MISSING_FIELD", "EMPTY_FIELD", "WRONG_TYPE", "DUPLICATE_ID",
                 "PROMPT_TOO_LONG", "MISSING_VIDEO", "UNREADABLE_VIDEO", "NO_FRAMES"):
        assert getattr(R, name) == name.lower() and getattr(R, name) in R.ALL_REASONS
    assert set(R.FIX_HINTS) == set(R.ALL_REASONS)


@pytest.mark.parametrize("line, reason, field", [
    ('{"id": "a", "video": ', R.MALFORMED_JSON, None),
    ("not json at all", R.MALFORMED_JSON, None),
    ('["a", "b"]', R.WRONG_TYPE, None),
    (_with(id=_DROP), R.MISSING_FIELD, "id"),
    (_with(video=_DROP), R.MISSING_FIELD, "video"),
    (_with(rejected=_DROP), R.MISSING_FIELD, "rejected"),
    (_with(chosen=None), R.MISSING_FIELD, "chosen"),
    (_with(prompt=""), R.EMPTY_FIELD, "prompt"),
    (_with(chosen="  \n "), R.EMPTY_FIELD, "chosen"),
    (_with(id=""), R.EMPTY_FIELD, "id"),
    (_with(video=["a.mp4"]), R.WRONG_TYPE, "video"),
    (_with(rejected=3), R.WRONG_TYPE, "rejected"),
    (_with(id=1.5), R.WRONG_TYPE, "id"),
    (_with(id=True), R.WRONG_TYPE, "id"),
    ('{"id": "a", "video": "v", "prompt": "\\ud800", "chosen": "c", "rejected": "r"}',
     R.MALFORMED_JSON, "prompt"),
])
def test_every_bad_kind_names_file_line_field_and_fix(tmp_path, line, reason, field):
    path = _write(tmp_path, ["", PAIR, line])  # the bad record is on physical line 3
    src = R.RecordSource(path, "pairs")
    assert len(src) == 2
    assert isinstance(src[0], R.PairRecord)
    bad = src[1]
    assert isinstance(bad, R.BadRecord) and bad.reason == reason, bad
    assert bad.source == f"{path}:3"
    if field is not None:
        assert f"'{field}'" in bad.detail
    msg = bad.message()
    assert f"{path}:3" in msg and reason in msg and "Fix:" in msg
    if bad.id is not None:
        assert f"id={bad.id!r}" in msg
    err = R.RecordError(bad)
    assert isinstance(err, ValueError) and str(err) == msg
    again = pickle.loads(pickle.dumps(err))
    assert again.bad == bad and str(again) == msg


def test_invalid_utf8_is_malformed(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(PAIR).encode() + b"\n" + b'{"id": "\xff\xfe"}\n')
    src = R.RecordSource(str(path), "pairs")
    assert src[1].reason == R.MALFORMED_JSON and "UTF-8" in src[1].detail
    assert src[1].source.endswith(":2")
    with pytest.raises(UnicodeDecodeError):
        src.index.line(1)


def test_duplicate_ids_and_int_ids(tmp_path):
    lines = [_with(id=7), _with(id="b"), _with(id="7"), _with(id="b", chosen=""), _with(id="b"), _with(id=8)]
    path = _write(tmp_path, lines)
    src = R.RecordSource(path, "pairs")
    got = [src[i] for i in range(len(src))]
    assert got[0].id == "7" and isinstance(got[0], R.PairRecord)   # int id -> str
    assert got[1].id == "b"
    assert got[2].reason == R.DUPLICATE_ID and got[2].id == "7" and f"{path}:1" in got[2].detail
    assert got[3].reason == R.EMPTY_FIELD                               # invalid: its own reason only
    assert got[4].reason == R.DUPLICATE_ID and f"{path}:2" in got[4].detail
    assert got[5].id == "8"
    assert R.find_duplicate_ids(src.index, "pairs") == {2, 4}
    assert src.num_duplicates == 2
    assert f"{path}:3" in got[2].message() and "id='7'" in got[2].message()


def test_blank_lines_crlf_bom_and_no_trailing_newline(tmp_path):
    recs = [_with(id=str(i), prompt=f"Q{i} é ✓") for i in range(4)]
    lines = ["", recs[0], "   ", "\t", recs[1], "", recs[2], recs[3]]
    path = _write(tmp_path, lines, newline="\r\n", trailing=False)
    raw = open(path, "rb").read()
    open(path, "wb").write(b"\xef\xbb\xbf" + raw)
    src = R.RecordSource(path, "pairs")
    assert len(src) == 4
    assert [int(x) for x in src.index.linenos] == [2, 5, 7, 8]
    for i in range(4):
        rec = src[i]
        assert isinstance(rec, R.PairRecord) and rec.prompt == f"Q{i} é ✓"
        assert rec.source == f"{path}:{[2, 5, 7, 8][i]}"
    assert src[-1].id == "3"
    with pytest.raises(IndexError):
        src[4]


def test_index_random_access_equals_naive_read(tmp_path):
    lines = []
    for i in range(200):
        lines.append(_with(id=str(i), prompt="p" * (i % 17 + 1) + "ü"))
        if i % 7 == 0:
            lines.append("")
    path = _write(tmp_path, lines)
    with open(path, encoding="utf-8") as f:
        naive = [(n, line.rstrip("\r\n")) for n, line in enumerate(f, 1) if line.strip()]
    index = R.JsonlIndex(path)
    assert len(index) == len(naive) == 200
    for i in [0, 1, 99, 57, 3, 199, 120, 0]:
        assert index.line(i) == naive[i]
        assert index.source(i) == f"{path}:{naive[i][0]}"


def test_empty_file_and_missing_file(tmp_path):
    path = _write(tmp_path, ["", "  "])
    assert len(R.RecordSource(path, "pairs")) == 0
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        R.JsonlIndex(str(tmp_path / "nope.jsonl"))


def test_hound_rows_are_pairs_and_triplets(tmp_path):
    path = _write(tmp_path, [HOUND, dict(HOUND, id=12)])
    pairs, triplets = R.RecordSource(path, "pairs"), R.RecordSource(path, "triplets")
    assert pairs[0] == R.PairRecord("hound_1", "hound/1", "Describe the video.", "Good.", "Bad.", f"{path}:1")
    assert triplets[0] == R.TripletRecord("hound_1", "hound/1", "Describe the video.", "GT answer.",
                                          f"{path}:1")
    assert pairs[1].id == triplets[1].id == "12"
    # a plain triplet lacks chosen/rejected: fine as a triplet, a named missing field as a pair
    path2 = _write(tmp_path, [TRIPLET], name="t.jsonl")
    assert isinstance(R.RecordSource(path2, "triplets")[0], R.TripletRecord)
    bad = R.RecordSource(path2, "pairs")[0]
    assert bad.reason == R.MISSING_FIELD and "'chosen'" in bad.detail and bad.id == "t"
    with pytest.raises(ValueError, match="kind"):
        R.RecordSource(path2, "sft")


def test_source_pickles_cheaply_and_reads_after_unpickling(tmp_path):
    path = _write(tmp_path, [_with(id=str(i)) for i in range(50)] + [_with(id="3")])
    src = R.RecordSource(path, "pairs")
    src[0]  # opens the file in this process
    blob = pickle.dumps(src)
    assert len(blob) < 4096
    again = pickle.loads(blob)
    assert len(again) == 51 and again[10] == src[10]
    assert again[50].reason == R.DUPLICATE_ID
    bad = R.BadRecord("f.jsonl:3", None, R.MALFORMED_JSON, "x")
    assert pickle.loads(pickle.dumps(bad)) == bad
    assert "(id unreadable)" in bad.message()


def test_changed_file_is_detected(tmp_path):
    path = _write(tmp_path, [PAIR])
    src = pickle.loads(pickle.dumps(R.RecordSource(path, "pairs")))
    with open(path, "a") as f:
        f.write(json.dumps(_with(id="z")) + "\n")
    with pytest.raises(RuntimeError, match="changed since it was indexed"):
        src[0]
