"""Preference records from JSONL: schemas, a byte-offset line index, validation, skip reasons.

Record kinds (one JSON object per line; blank lines are ignored and not counted):
  pairs     {"id", "video", "prompt", "chosen", "rejected"}
  triplets  {"id", "video", "prompt", "answer"}
LLaVA-Hound `sft_dpo_17k` rows carry id, video, prompt, answer, chosen, rejected (plus extras such
as chosen_score / rejected_score) and are read as either kind: as pairs they use chosen and
rejected, as triplets they use answer. Extra fields are always ignored.

Validation rules (the first failing field, in schema order, decides the reason):
  * a line that is not valid UTF-8 or not valid JSON           -> MALFORMED_JSON
  * a JSON value that is not an object                          -> WRONG_TYPE
  * a required field absent, or null                            -> MISSING_FIELD
  * `id` neither a string nor an integer; another field not a string -> WRONG_TYPE
  * a string that is empty or only whitespace                   -> EMPTY_FIELD
  * a later valid record reusing the id of an earlier valid one  -> DUPLICATE_ID
Integer ids (common in the wild) are accepted and converted with `str()`, so `7` and `"7"` are
the same id (and collide as duplicates). Booleans are not integers here.
Strings are kept verbatim (no stripping); `video` is a path relative to a video root, resolved
by the pipeline.

A bad record never vanishes: reading it returns a `BadRecord` (picklable plain fields, the
in-band skip marker that travels through grain workers), or `RecordError` carries it when the
policy is "error". `source` is always "path:line" with the 1-based physical line number.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from array import array
from typing import Dict, Optional, Union

import numpy as np

# Skip reasons: the one list used for counting everywhere (records, video decoding, pipeline).
MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
EMPTY_FIELD = "empty_field"
WRONG_TYPE = "wrong_type"
DUPLICATE_ID = "duplicate_id"
PROMPT_TOO_LONG = "prompt_too_long"
PLACEHOLDER_IN_TEXT = "placeholder_in_text"
MISSING_VIDEO = "missing_video"
UNREADABLE_VIDEO = "unreadable_video"
NO_FRAMES = "no_frames"
VIDEO_TOO_SMALL = "video_too_small"
ASPECT_MISMATCH = "aspect_mismatch"
ALL_REASONS = (
    MALFORMED_JSON, MISSING_FIELD, EMPTY_FIELD, WRONG_TYPE, DUPLICATE_ID, PROMPT_TOO_LONG,
    PLACEHOLDER_IN_TEXT, MISSING_VIDEO, UNREADABLE_VIDEO, NO_FRAMES, VIDEO_TOO_SMALL, ASPECT_MISMATCH,
)

FIX_HINTS = {
    MALFORMED_JSON: "make the line one complete JSON object in UTF-8 (JSONL: one object per line)",
    MISSING_FIELD: "add the field with a non-empty string value",
    EMPTY_FIELD: "give the field non-empty text, or remove the record",
    WRONG_TYPE: "store the value as a JSON string (ids may also be integers)",
    DUPLICATE_ID: "give every record a unique id, or remove the repeated record",
    PROMPT_TOO_LONG: "shorten the prompt or raise data.max_prompt_text_tokens "
                     "(prompts and videos are never truncated)",
    PLACEHOLDER_IN_TEXT: "remove the video placeholder token from the text; the pipeline "
                         "inserts the placeholder itself",
    MISSING_VIDEO: "check that `video` is relative to data.video_root and that the file exists",
    UNREADABLE_VIDEO: "re-encode the video (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or replace it",
    NO_FRAMES: "the video or frame folder has no decodable frame: replace it or remove the record",
    VIDEO_TOO_SMALL: "the model's FramePolicy.min_source_side is larger than the video's height or "
                     "width: use a larger source video or remove the record",
    ASPECT_MISMATCH: "the video's aspect ratio is too far from the bucket's (FramePolicy."
                     "max_aspect_distortion) for a direct resize: crop or pad it to the bucket's "
                     "aspect ratio, or remove the record",
}

KINDS = ("pairs", "triplets")
FIELDS = {
    "pairs": ("id", "video", "prompt", "chosen", "rejected"),
    "triplets": ("id", "video", "prompt", "answer"),
}


@dataclasses.dataclass(frozen=True)
class PairRecord:
    """A preference pair; `source` is "path:line" (1-based)."""

    id: str
    video: str
    prompt: str
    chosen: str
    rejected: str
    source: str


@dataclasses.dataclass(frozen=True)
class TripletRecord:
    """A (video, prompt, ground-truth answer) triplet; `source` is "path:line" (1-based)."""

    id: str
    video: str
    prompt: str
    answer: str
    source: str


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """In-band skip marker: where (`source` "path:line"), which record (`id`, None if unreadable),
    why (`reason`, one of ALL_REASONS) and the specifics (`detail`, naming the field)."""

    source: str
    id: Optional[str]
    reason: str
    detail: str

    def message(self) -> str:
        """A one-line human message: file:line, id, reason, detail and how to fix it."""
        who = f"record id={self.id!r}" if self.id is not None else "record (id unreadable)"
        hint = FIX_HINTS.get(self.reason, "fix or remove the record")
        return f"{self.source}: {who}: {self.reason}: {self.detail}. Fix: {hint}."

    def to_json(self) -> dict:
        """A JSON-ready dict (for skipped-records files)."""
        return dataclasses.asdict(self)


Record = Union[PairRecord, TripletRecord]


class RecordError(ValueError):
    """A bad record under on_bad_record="error"; `.bad` is the BadRecord. Picklable."""

    def __init__(self, bad: BadRecord):
        super().__init__(bad.message())
        self.bad = bad

    def __reduce__(self):
        return (type(self), (self.bad,))


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"record kind {kind!r}: expected one of {KINDS}")
    return kind


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_field(obj: dict, field: str, kind: str) -> Optional[tuple]:
    """(reason, detail) if `obj[field]` is not a usable string, else None."""
    if field not in obj:
        return MISSING_FIELD, f"field '{field}' is missing (a {kind} record needs {', '.join(FIELDS[kind])})"
    value = obj[field]
    if value is None:
        return MISSING_FIELD, f"field '{field}' is null"
    if not isinstance(value, str):
        return WRONG_TYPE, f"field '{field}' is a JSON {_json_type(value)}, expected a string"
    if not value.strip():
        return EMPTY_FIELD, f"field '{field}' is {'empty' if not value else 'blank (whitespace only)'}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return MALFORMED_JSON, f"field '{field}' contains an unpaired surrogate escape (\\ud800-\\udfff)"
    return None


def parse_record(text: Union[str, bytes], source: str, kind: str) -> Union[Record, BadRecord]:
    """Parses one JSONL line (str, or raw bytes decoded as UTF-8) into a record of `kind`.

    Never raises for bad data: returns a BadRecord naming `source`, the id when readable, the
    reason and the offending field. Raises ValueError only for an unknown `kind`.
    """
    check_kind(kind)
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            return BadRecord(source, None, MALFORMED_JSON,
                             f"line is not valid UTF-8 (byte {e.start}: {e.reason})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return BadRecord(source, None, MALFORMED_JSON, f"invalid JSON at column {e.colno}: {e.msg}")
    except RecursionError:
        return BadRecord(source, None, MALFORMED_JSON, "JSON nested too deeply")
    if not isinstance(obj, dict):
        return BadRecord(source, None, WRONG_TYPE, f"line is a JSON {_json_type(obj)}, "
                                                   f"expected an object with {', '.join(FIELDS[kind])}")
    if "id" not in obj or obj["id"] is None:
        what = "missing" if "id" not in obj else "null"
        return BadRecord(source, None, MISSING_FIELD, f"field 'id' is {what}")
    rid = obj["id"]
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    elif not isinstance(rid, str):
        return BadRecord(source, None, WRONG_TYPE,
                         f"field 'id' is a JSON {_json_type(rid)}, expected a string or integer")
    elif not rid.strip():
        what = "empty" if not rid else "blank (whitespace only)"
        return BadRecord(source, None, EMPTY_FIELD, f"field 'id' is {what}")
    for field in FIELDS[kind][1:]:
        problem = _check_field(obj, field, kind)
        if problem is not None:
            return BadRecord(source, rid, *problem)
    if kind == "pairs":
        return PairRecord(id=rid, video=obj["video"], prompt=obj["prompt"], chosen=obj["chosen"],
                          rejected=obj["rejected"], source=source)
    return TripletRecord(id=rid, video=obj["video"], prompt=obj["prompt"], answer=obj["answer"],
                         source=source)


_BOM = b"\xef\xbb\xbf"


class JsonlIndex:
    """Random access to the non-blank lines of a JSONL file through a byte-offset index.

    Built by one streaming pass (nothing parsed, nothing but numpy arrays kept): `offsets`,
    `lengths` (bytes, line terminator excluded) and `linenos` (1-based physical line numbers)
    of every non-blank line. Position i in [0, len) is the i-th non-blank line. Lines end with
    "\\n" or "\\r\\n"; the last may lack a terminator; a UTF-8 BOM at the start is skipped.
    The file is opened lazily once per process, so an index pickles (arrays only) into grain
    workers. Reads are positional (thread-safe). Modifying the file afterwards is detected
    (size change) when a process first opens it.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = os.fspath(path)
        offsets, lengths, linenos = array("q"), array("q"), array("q")
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"JSONL file {self.path!r} does not exist (check data.pairs)")
        pos = 0
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                start, content = pos, raw
                if lineno == 1 and raw.startswith(_BOM):
                    start, content = pos + len(_BOM), raw[len(_BOM):]
                pos += len(raw)
                if content.strip():
                    body = content.rstrip(b"\r\n")
                    offsets.append(start)
                    lengths.append(len(body))
                    linenos.append(lineno)
        self.size = pos
        self.offsets = np.array(offsets, dtype=np.int64)
        self.lengths = np.array(lengths, dtype=np.int64)
        self.linenos = np.array(linenos, dtype=np.int64)
        self._fd, self._pid, self._lock = None, None, threading.Lock()

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def _position(self, i: int) -> int:
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"line position {i} out of range for {self.path} ({n} non-blank lines)")
        return j

    def _open(self) -> int:
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                size = os.fstat(fd).st_size
                if size != self.size:
                    os.close(fd)
                    raise RuntimeError(f"{self.path} changed since it was indexed ({self.size} -> "
                                       f"{size} bytes): rebuild the index (restart the run) after "
                                       "editing the file")
                self._fd, self._pid = fd, os.getpid()
            return self._fd

    def line_bytes(self, i: int) -> tuple:
        """(lineno, raw bytes of the i-th non-blank line without its terminator)."""
        j = self._position(i)
        fd, off, length = self._open(), int(self.offsets[j]), int(self.lengths[j])
        if hasattr(os, "pread"):
            data = os.pread(fd, length, off)
        else:  # pragma: no cover - Windows
            with self._lock:
                os.lseek(fd, off, os.SEEK_SET)
                data = os.read(fd, length)
        return int(self.linenos[j]), data

    def line(self, i: int) -> tuple:
        """(lineno, text) of the i-th non-blank line; raises UnicodeDecodeError on invalid UTF-8
        (use `line_bytes` + `parse_record` to turn that into a BadRecord instead)."""
        lineno, data = self.line_bytes(i)
        return lineno, data.decode("utf-8")

    def source(self, i: int) -> str:
        """"path:line" of position i."""
        return f"{self.path}:{int(self.linenos[self._position(i)])}"

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd, self._pid = None, None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_fd=None, _pid=None, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def scan_duplicate_ids(index: JsonlIndex, kind: str) -> Dict[int, int]:
    """{position: line number of the first occurrence} for every valid record whose id repeats
    the id of an earlier valid record. One streaming pass keeping only the ids seen.

    Only valid records claim an id: an invalid line is reported under its own reason and does
    not make a later valid record with its id a duplicate, so every line gets exactly one reason
    and the records kept have unique ids.
    """
    check_kind(kind)
    first: Dict[str, int] = {}
    dups: Dict[int, int] = {}
    for i in range(len(index)):
        lineno, raw = index.line_bytes(i)
        rec = parse_record(raw, "", kind)
        if isinstance(rec, BadRecord):
            continue
        if rec.id in first:
            dups[i] = first[rec.id]
        else:
            first[rec.id] = lineno
    return dups


def find_duplicate_ids(index: JsonlIndex, kind: str) -> frozenset:
    """Positions (indices into `index`) of valid records repeating an earlier valid id."""
    return frozenset(scan_duplicate_ids(index, kind))


class RecordSource:
    """A random-access source of parsed records for grain: `source[i]` is a PairRecord /
    TripletRecord or a BadRecord (never raises for bad data), `len(source)` the number of
    non-blank lines. Later occurrences of an id are DUPLICATE_ID BadRecords naming the first.
    Pickles cheaply (path, kind and int arrays; the file reopens lazily in each process).
    """

    def __init__(self, path_or_index: Union[str, os.PathLike, JsonlIndex], kind: str):
        self.kind = check_kind(kind)
        self.index = path_or_index if isinstance(path_or_index, JsonlIndex) else JsonlIndex(path_or_index)
        dups = scan_duplicate_ids(self.index, kind)
        order = sorted(dups)
        self._dup_positions = np.array(order, dtype=np.int64)
        self._dup_first_lines = np.array([dups[p] for p in order], dtype=np.int64)

    @property
    def path(self) -> str:
        return self.index.path

    @property
    def num_duplicates(self) -> int:
        return int(self._dup_positions.shape[0])

    def __len__(self) -> int:
        return len(self.index)

    def _first_line_of_duplicate(self, j: int) -> Optional[int]:
        k = int(np.searchsorted(self._dup_positions, j))
        if k < self._dup_positions.shape[0] and int(self._dup_positions[k]) == j:
            return int(self._dup_first_lines[k])
        return None

    def __getitem__(self, i: int) -> Union[Record, BadRecord]:
        j = self.index._position(i)
        lineno, raw = self.index.line_bytes(j)
        source = f"{self.path}:{lineno}"
        rec = parse_record(raw, source, self.kind)
        if not isinstance(rec, BadRecord):
            first = self._first_line_of_duplicate(j)
            if first is not None:
                return BadRecord(source, rec.id, DUPLICATE_ID,
                                 f"id {rec.id!r} was already used at {self.path}:{first}")
        return rec

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"RecordSource({self.path!r}, kind={self.kind!r}, lines={len(self)})"
