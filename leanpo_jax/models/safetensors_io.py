"""A small reader/writer of the safetensors format, numpy-only, lazy, with bfloat16.

File layout: 8-byte little-endian header length n, n bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then
the raw little-endian tensor bytes (offsets relative to the end of the header).

    ckpt = open_checkpoint(path)       # a .safetensors file, or a folder (sharded or not)
    ckpt.info(name) -> (dtype, shape)  # header only, no data read
    ckpt[name] -> np.ndarray           # a read-only view of the memory-mapped file
    write_checkpoint(out_dir, specs, arrays, max_shard_bytes=...)   # streams, shards + index

The `safetensors` package's numpy backend cannot hold bfloat16; here BF16 maps to
`ml_dtypes.bfloat16`, which numpy, JAX and the writer all understand.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Mapping
from typing import Iterable, Iterator, Optional, Sequence, Tuple

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype(bool),
}
_CODES = {dt: code for code, dt in DTYPES.items()}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 4 << 30
_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def remove_weight_files(folder: str) -> None:
    """Deletes model.safetensors, the index and model-*-of-*.safetensors shards in `folder`
    (an export over an older one must not leave a stale shard that the index no longer names)."""
    for fn in os.listdir(folder):
        if fn in (SINGLE_FILE, INDEX_FILE) or _SHARD.fullmatch(fn):
            os.remove(os.path.join(folder, fn))
# The reference implementation refuses headers above 100 MB; so do we (a corrupt length
# would otherwise make us read the whole file as JSON).
_MAX_HEADER_BYTES = 100_000_000


def dtype_code(dtype) -> str:
    """numpy dtype -> safetensors dtype string (e.g. bfloat16 -> "BF16")."""
    dt = np.dtype(dtype)
    code = _CODES.get(dt.newbyteorder("<") if dt.byteorder == ">" else dt)
    if code is None:
        raise ValueError(f"dtype {dt} has no safetensors code; supported: {sorted(DTYPES)}")
    return code


class SafetensorsFile(Mapping):
    """Lazy read-only mapping name -> np.ndarray over one .safetensors file (memory-mapped)."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError(f"{self.path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > min(_MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"{self.path}: header length {n} is invalid (file of {size} "
                                 "bytes); the file is not safetensors or is truncated")
            header = json.loads(f.read(n).decode("utf-8"))
        self.metadata = header.pop("__metadata__", None) or {}
        self._data_start, self._data_size = 8 + n, size - 8 - n
        self._entries = {}
        for name, e in header.items():
            if e["dtype"] not in DTYPES:
                raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype "
                                 f"{e['dtype']}; supported: {sorted(DTYPES)}")
            dt, shape = DTYPES[e["dtype"]], tuple(int(s) for s in e["shape"])
            begin, end = (int(o) for o in e["data_offsets"])
            if end - begin != math.prod(shape) * dt.itemsize or end > self._data_size:
                raise ValueError(f"{self.path}: tensor {name!r} {e} does not fit its shape or "
                                 "the file; the file is corrupt or truncated")
            self._entries[name] = (dt, shape, begin, end)
        self._mmap = None

    def info(self, name: str) -> Tuple[np.dtype, tuple]:
        """(dtype, shape) of a tensor, from the header only."""
        dt, shape, _, _ = self._entries[name]
        return dt, shape

    def __getitem__(self, name: str) -> np.ndarray:
        dt, shape, begin, end = self._entries[name]
        if begin == end:
            return np.zeros(shape, dt)
        if self._mmap is None:
            self._mmap = np.memmap(self.path, np.uint8, mode="r", offset=self._data_start,
                                   shape=(self._data_size,))
        return self._mmap[begin:end].view(dt).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class Checkpoint(Mapping):
    """Lazy mapping name -> np.ndarray over every tensor of a (possibly sharded) checkpoint."""

    def __init__(self, path: str):
        path = os.fspath(path)
        self.path = path
        if os.path.isfile(path):
            shard_of = None
            files = [path]
        elif os.path.isfile(os.path.join(path, INDEX_FILE)):
            with open(os.path.join(path, INDEX_FILE)) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
            shard_of = {name: os.path.join(path, fn) for name, fn in weight_map.items()}
            files = [os.path.join(path, fn) for fn in files]
        elif os.path.isfile(os.path.join(path, SINGLE_FILE)):
            shard_of, files = None, [os.path.join(path, SINGLE_FILE)]
        else:
            found = sorted(fn for fn in os.listdir(path) if fn.endswith(".safetensors")) \
                if os.path.isdir(path) else []
            if len(found) != 1:
                raise FileNotFoundError(
                    f"{path}: expected a .safetensors file, or a folder with {SINGLE_FILE} or "
                    f"{INDEX_FILE}; found safetensors files {found}")
            shard_of, files = None, [os.path.join(path, found[0])]
        missing = [fn for fn in files if not os.path.isfile(fn)]
        if missing:
            raise FileNotFoundError(f"{path}: shard files named by the index are missing: "
                                    f"{missing}")
        self.files = {fn: SafetensorsFile(fn) for fn in files}
        self._where = {}
        for fn, st in self.files.items():
            for name in st:
                if shard_of is None or shard_of.get(name) == fn:
                    self._where.setdefault(name, fn)
        if shard_of is not None:
            absent = sorted(n for n in shard_of if n not in self._where)
            if absent:
                raise ValueError(f"{path}: {INDEX_FILE} lists tensors its shards do not hold: "
                                 f"{absent[:10]}")

    def source(self, name: str) -> str:
        """The file that holds `name`."""
        return self._where[name]

    def info(self, name: str) -> Tuple[np.dtype, tuple]:
        return self.files[self._where[name]].info(name)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.files[self._where[name]][name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def open_checkpoint(path: str) -> Checkpoint:
    """A lazy mapping over a .safetensors file or a folder (model.safetensors or sharded)."""
    return Checkpoint(path)


# ------------------------------------------------------------------------------------ writing
def _header(specs: Sequence[tuple], metadata: Optional[dict]) -> bytes:
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, dtype, shape in specs:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        header[name] = {"dtype": dtype_code(dtype), "shape": [int(s) for s in shape],
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
    raw += b" " * (-(len(raw) + 8) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _write_array(f, arr: np.ndarray, name: str, dtype, shape) -> None:
    arr = np.asarray(arr)
    if arr.dtype != np.dtype(dtype) or tuple(arr.shape) != tuple(shape):
        raise ValueError(f"tensor {name!r}: got {arr.dtype}{list(arr.shape)}, the header "
                         f"announced {np.dtype(dtype)}{list(shape)}")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    f.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)


def write_checkpoint(out: str, specs: Sequence[tuple], arrays: Iterable[np.ndarray], *,
                     max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                     metadata: Optional[dict] = None) -> list:
    """Streams `arrays` (one per spec `(name, dtype, shape)`, same order) into `out`.

    `out` ending in .safetensors is one file; otherwise a folder gets model.safetensors, or
    model-0000i-of-0000n.safetensors + model.safetensors.index.json when the data exceeds
    `max_shard_bytes` (a tensor larger than that gets a shard of its own). Returns the paths.
    """
    specs = [(n, np.dtype(d), tuple(s)) for n, d, s in specs]
    names = [s[0] for s in specs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate tensor names: {dup}")
    shards, size = [[]], 0
    for spec in specs:
        nbytes = math.prod(spec[2]) * spec[1].itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    if out.endswith(".safetensors"):
        if len(shards) > 1:
            raise ValueError(f"{out}: {len(shards)} shards needed; give a folder instead")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        paths = [out]
    else:
        os.makedirs(out, exist_ok=True)
        n = len(shards)
        paths = [os.path.join(out, SINGLE_FILE if n == 1 else
                              f"model-{i + 1:05d}-of-{n:05d}.safetensors") for i in range(n)]
    it = iter(arrays)
    for path, shard in zip(paths, shards):
        with open(path, "wb") as f:
            f.write(_header(shard, metadata))
            for name, dtype, shape in shard:
                try:
                    arr = next(it)
                except StopIteration:
                    raise ValueError(f"fewer arrays than specs: nothing for {name!r}") from None
                _write_array(f, arr, name, dtype, shape)
    if next(it, None) is not None:
        raise ValueError(f"more arrays than the {len(specs)} specs")
    if len(paths) > 1:
        total = sum(math.prod(s[2]) * s[1].itemsize for s in specs)
        weight_map = {name: os.path.basename(p) for p, shard in zip(paths, shards)
                      for name, _, _ in shard}
        with open(os.path.join(out, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2,
                      sort_keys=True)
    return paths


def save_file(tensors: Mapping, path: str, metadata: Optional[dict] = None) -> str:
    """Writes a mapping name -> array as one .safetensors file (in the mapping's order)."""
    arrays = {k: np.asarray(v) for k, v in tensors.items()}
    specs = [(k, a.dtype, a.shape) for k, a in arrays.items()]
    return write_checkpoint(path if path.endswith(".safetensors") else path + ".safetensors",
                            specs, arrays.values(), max_shard_bytes=2**63,
                            metadata=metadata)[0]


def load_file(path: str) -> dict:
    """Every tensor of a checkpoint as an in-memory numpy copy (small files, tests)."""
    ckpt = open_checkpoint(path)
    return {k: np.array(ckpt[k]) for k in ckpt}
