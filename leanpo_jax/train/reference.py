"""DPO reference log-probs: one pass of the initial model over a pairs file, cached in the workdir.

    refs = reference_logps(model, pipeline_factory, key_parts, cache_dir)   # {chosen, rejected}
    batch.update(lookup(refs, batch["record_index"]))                      # per training batch

The cache file is WORKDIR/reference/<sha256>.npz where the hash covers the pairs file's bytes,
the data keys that change tokens (tokenizer, frames, lengths) and the identity of the initial
weights (HF folder: every file's name, size and mtime; random init: preset, seed and the model
config). A rerun, or a resumed run, reuses it; any change of data or weights computes anew.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Dict, Iterable, Mapping

import numpy as np

REFERENCE_KEYS = ("chosen", "rejected")


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(init_from: str, seed: int, model_config_repr: str) -> Dict:
    """What the initial weights are, as JSON: an HF folder's file stats, or seed + config."""
    if init_from:
        files = []
        for name in sorted(os.listdir(init_from)):
            st = os.stat(os.path.join(init_from, name))
            files.append([name, st.st_size, st.st_mtime_ns])
        return {"init_from": os.path.abspath(init_from), "files": files}
    return {"seed": int(seed), "model": model_config_repr}


def cache_key(pairs_path: str, data_keys: Mapping, weights: Mapping) -> str:
    payload = {"pairs": _file_digest(pairs_path), "data": dict(data_keys), "weights": dict(weights)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def reference_logps(score: Callable[[Iterable[Dict]], Dict[str, np.ndarray]],
                    batches: Callable[[], Iterable[Dict]], *, key: str, cache_dir: str,
                    write: bool = True) -> Dict[str, np.ndarray]:
    """Summed log-probs of chosen and rejected per record index (float64, NaN = skipped record),
    loaded from `cache_dir/<key>.npz` or computed as `score(batches())` and saved there
    (`write`: on process 0 only in multi-host runs)."""
    path = os.path.join(cache_dir, f"{key}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return {k: f[k] for k in REFERENCE_KEYS}
    scores = score(batches())
    refs = {k: scores[k] for k in REFERENCE_KEYS}
    if write:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **refs)
        os.replace(tmp, path)  # never leave a torn cache file under the final name
    return refs


def lookup(refs: Dict[str, np.ndarray], record_index: np.ndarray) -> Dict[str, np.ndarray]:
    """-> {ref_chosen_logps, ref_rejected_logps} float32 [B] for a batch (0 on padding rows).

    A record the reference pass skipped but training did not would be a data mismatch: error."""
    index = np.asarray(record_index)
    valid = index >= 0
    out = {}
    for k in REFERENCE_KEYS:
        values = np.zeros(index.shape, np.float32)
        picked = refs[k][index[valid]]
        if np.isnan(picked).any():
            missing = index[valid][np.isnan(picked)].tolist()
            raise ValueError(f"no reference log-prob for record line(s) {missing}: the reference "
                             "pass skipped them; delete WORKDIR/reference and rerun")
        values[valid] = picked
        out[f"ref_{k}_logps"] = values
    return out
