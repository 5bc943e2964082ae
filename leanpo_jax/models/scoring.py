"""Response log-probs without a gradient: probe curves, eval, DPO references, reward checks.

    scores = avg_logps(model, batch)          # {chosen, rejected}: summed; *_avg: per token
    score_pairs(model, pipeline)              # every record of a pipeline, by record index

Both go through `models.logps.pair_logps` (the shared prefix by default), so a score equals the
log-probs the train step differentiates, token for token. Responses of a row with the same ids
(a pair whose chosen equals its rejected) get one score, bit for bit: `tie_identical`.
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


def same_response(batch: Dict, first: str, second: str) -> jax.Array:
    """[B] bool: row b's responses `first` and `second` have the same mask and the same ids
    wherever that mask is set (padding ids never matter). Widths may differ."""
    ids = [jnp.asarray(batch[f"{n}_ids"]) for n in (first, second)]
    masks = [jnp.asarray(batch[f"{n}_mask"]).astype(bool) for n in (first, second)]
    width = max(x.shape[1] for x in ids)

    def pad(x):
        return jnp.pad(x, ((0, 0), (0, width - x.shape[1])))

    (ids_a, ids_b), (mask_a, mask_b) = [pad(x) for x in ids], [pad(x) for x in masks]
    return jnp.all(mask_a == mask_b, axis=1) & jnp.all(~mask_a | (ids_a == ids_b), axis=1)


def tie_identical(scores: Dict[str, jax.Array], batch: Dict, names: Tuple[str, ...]) -> Dict[str, jax.Array]:
    """`scores` ({name}, {name}_tokens per response) with each response that repeats an earlier
    one of its row (same_response; order: `names`) given that earlier one's values.

    Why: the shared layout scores the two sides at different offsets of one packed pass, so
    the same text came out a few ulps apart (up to ~1e-7 relative) and "winner > loser" on
    identical pairs was a coin toss. One text, one score."""
    scores = dict(scores)
    for j, later in enumerate(names):
        for earlier in reversed(names[:j]):  # the first response of the row with these ids wins
            same = same_response(batch, earlier, later)
            for suffix in ("", "_tokens"):
                scores[later + suffix] = jnp.where(same, scores[earlier + suffix], scores[later + suffix])
    return scores


def avg_logps(model, batch: Dict, *, layout: str = "shared", chunk_size: int = 128) -> Dict[str, jax.Array]:
    """-> for each response in the batch (chosen, rejected, answer: those present): `name` = Σ_j log π(y_j)
    [B], `name_avg` = that sum / |y| [B], `name_tokens` = |y| [B]. Frames may be uint8 (they
    are normalised with the model's mean/std here). No gradient flows. Two responses of a row
    with the same ids get bit-identical values (`tie_identical`)."""
    batch = normalize_batch(batch, model.config)
    names = _names(batch)
    out = pair_logps(model, jax.lax.stop_gradient(batch), layout=layout,
                     chunk_size=chunk_size, names=names)
    out = tie_identical({k: jax.lax.stop_gradient(v) for k, v in out.items()}, batch, names)
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
