"""Response log-probs without a gradient: probe curves, eval, DPO references, reward checks.

    scores = avg_logps(model, batch)          # {chosen, rejected}: summed; *_avg: per token
    score_pairs(model, pipeline)              # every record of a pipeline, by record index

Both go through `models.logps.pair_logps` (the shared prefix by default), so a score equals the
log-probs the train step differentiates, token for token.
"""

from __future__ import annotations

import functools
from typing import Dict, Iterable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax import losses
from leanpo_jax.models.logps import normalize_batch, pair_logps


def _names(batch) -> Tuple[str, ...]:
    """The responses present, in the order chosen, rejected, answer (at least one)."""
    names = tuple(n for n in ("chosen", "rejected", "answer") if f"{n}_ids" in batch)
    if not names:
        raise ValueError("the batch holds no chosen_ids / rejected_ids / answer_ids")
    return names


def avg_logps(model, batch: Dict, *, layout: str = "shared", chunk_size: int = 128) -> Dict[str, jax.Array]:
    """-> for each response in the batch (chosen, rejected, answer: those present): `name` = Σ_j log π(y_j)
    [B], `name_avg` = that sum / |y| [B], `name_tokens` = |y| [B]. Frames may be uint8 (they
    are normalised with the model's mean/std here). No gradient flows."""
    batch = normalize_batch(batch, model.config)
    names = _names(batch)
    out = pair_logps(model, jax.lax.stop_gradient(batch), layout=layout,
                              chunk_size=chunk_size, names=names)
    out = {k: jax.lax.stop_gradient(v) for k, v in out.items()}
    for n in names:
        out[f"{n}_avg"] = losses.average_logps(out[n], out[f"{n}_tokens"])
    return out


@functools.lru_cache(maxsize=8)
def _jitted(layout: str, chunk_size: int):
    @nnx.jit
    def run(model, batch):
        return avg_logps(model, batch, layout=layout, chunk_size=chunk_size)

    return run


def jitted_avg_logps(layout: str = "shared", chunk_size: int = 128):
    """`avg_logps` under nnx.jit (one compile per batch shape), shared across callers."""
    return _jitted(layout, int(chunk_size))


def score_pairs(model, batches: Iterable[Dict], *, num_records: int, layout: str = "shared",
                chunk_size: int = 128, to_device=None) -> Dict[str, np.ndarray]:
    """Scores every row of `batches` (an eval-mode pipeline: padding rows have record_index −1)
    -> float64 arrays [num_records] per output key, NaN where a record never appeared (skipped).

    `to_device(batch)` turns a host batch into device arrays (default: jnp.asarray per field;
    the trainer passes its global-batch builder). On multi-host, the device outputs are
    gathered so every process gets every record's score.
    """
    run = jitted_avg_logps(layout, chunk_size)
    table: Optional[Dict[str, np.ndarray]] = None
    for host in batches:
        index = host.pop("record_index")
        host.pop("pair_weight", None)
        device = to_device(host) if to_device else {k: jnp.asarray(v) for k, v in host.items()}
        scores = run(model, device)
        scores = {k: _gather(v) for k, v in scores.items()}
        index = _gather_host(np.asarray(index))
        if table is None:
            table = {k: np.full(num_records, np.nan, np.float64) for k in scores}
        valid = index >= 0
        for k, v in scores.items():
            table[k][index[valid]] = np.asarray(v, np.float64)[valid]
    return table or {}


def _gather(x: jax.Array) -> np.ndarray:
    if jax.process_count() == 1 or x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _gather_host(x: np.ndarray) -> np.ndarray:
    """Per-host rows -> rows of every host, in process order (= the global batch's order)."""
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x)).reshape((-1,) + x.shape[1:])
