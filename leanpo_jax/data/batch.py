"""The one batch schema: pair and triplet batches, their fields, shapes and dtypes, built here.

B rows (pairs / triplets), P prompt slots, R response slots, F frames of H x W, A position axes:

    field             dtype    shape            meaning
    frames            uint8    [B, F, H, W, 3]  video models only; normalised inside the step
    prompt_ids        int32    [B, P]           RIGHT-padded template + N placeholders + question
    prompt_mask       int32    [B, P]           1 on the prompt, 0 on padding
    prompt_lengths    int32    [B]              true prompt length of each row
    prompt_positions  int32    [B, P] / [B, A, P]  optional: the family's position table
    chosen_ids/_mask  int32    [B, R]           pairs: the winner, right-padded
    rejected_ids/_mask int32   [B, R]           pairs: the loser
    answer_ids/_mask  int32    [B, R]           triplets: the ground-truth answer
                                                (scored_pairs: all three)
    pair_weight       float32  [B]              1 = a real record, 0 = a padding row
    record_index      int32    [B]              line position in the source (-1: padding; optional)
    ref_chosen_logps / ref_rejected_logps float32 [B]   DPO reference log-probs (optional)

Batches are plain dicts of numpy arrays (grain moves them between processes and jax treats
them as pytrees, with no registration and no jax import in data workers); `make_batch` is the
one constructor: a missing, unknown or misspelled field, a wrong dtype or a row count that
disagrees fails there, naming the field. Responses start, in each row, at the prompt's next
position (prompt_lengths without a position table).
"""

from __future__ import annotations

import difflib
from typing import Dict, Optional, Sequence

import numpy as np

# Id written into padded positions (masked out everywhere; any embedding row but the placeholder).
PAD_ID = 0
# "scored_pairs": a pair with its GT answer, scored together (self-generation's reward check).
KIND_RESPONSES = {"pairs": ("chosen", "rejected"), "triplets": ("answer",),
                  "scored_pairs": ("chosen", "rejected", "answer")}
_REQUIRED = {"prompt_ids": np.int32, "prompt_mask": np.int32, "prompt_lengths": np.int32,
             "pair_weight": np.float32}
_OPTIONAL = {"frames": np.uint8, "prompt_positions": np.int32, "record_index": np.int32,
             "ref_chosen_logps": np.float32, "ref_rejected_logps": np.float32}


def response_names(kind: str) -> tuple:
    """("chosen", "rejected") for pairs, ("answer",) for triplets."""
    try:
        return KIND_RESPONSES[kind]
    except KeyError:
        raise ValueError(f"batch kind {kind!r}: expected one of {tuple(KIND_RESPONSES)}") from None


def schema(kind: str) -> Dict[str, tuple]:
    """{field: (dtype, required)} of a batch of `kind`."""
    fields = {k: (d, True) for k, d in _REQUIRED.items()}
    for n in response_names(kind):
        fields[f"{n}_ids"] = (np.int32, True)
        fields[f"{n}_mask"] = (np.int32, True)
    fields.update({k: (d, False) for k, d in _OPTIONAL.items()})
    return fields


def make_batch(kind: str, **fields) -> dict:
    """The batch dict of `kind` from its fields (module docstring), checked: every required
    field present, no unknown one, dtypes exact, one leading row count."""
    known = schema(kind)
    unknown = sorted(set(fields) - set(known))
    if unknown:
        near = {k: difflib.get_close_matches(k, list(known), n=1) for k in unknown}
        hints = ", ".join(f"{k!r}" + (f" (did you mean {near[k][0]!r}?)" if near[k] else "") for k in unknown)
        raise KeyError(f"unknown {kind} batch field(s) {hints}; fields: {sorted(known)}")
    missing = sorted(k for k, (_, required) in known.items() if required and k not in fields)
    if missing:
        raise KeyError(f"{kind} batch lacks field(s) {missing}")
    rows = None
    out = {}
    for name, value in fields.items():
        value = np.asarray(value)
        dtype = known[name][0]
        if value.dtype != dtype:
            raise TypeError(f"batch field {name!r} has dtype {value.dtype}, expected {np.dtype(dtype).name}")
        if value.ndim == 0 or (rows is not None and value.shape[0] != rows):
            raise ValueError(f"batch field {name!r} has shape {value.shape}: every field needs the "
                             f"same leading row count ({rows})")
        rows = value.shape[0]
        out[name] = value
    return out


def pad_rows(rows: Sequence[np.ndarray], width: int, pad_id: int = PAD_ID) -> tuple:
    """Variable-length id rows -> (ids int32 [N, width] right-padded, mask int32 [N, width])."""
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        if len(r) > width:
            raise ValueError(f"row {i} holds {len(r)} ids, more than the width {width}")
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return ids, mask


def position_table(tables: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Per-row position tables [..., len_i] -> int32 [N, ..., width], padding positions 0."""
    out = np.zeros((len(tables),) + np.shape(tables[0])[:-1] + (width,), np.int32)
    for i, t in enumerate(tables):
        out[i, ..., : np.shape(t)[-1]] = t
    return out


def batch_from_rows(kind: str, prompts: Sequence[np.ndarray], responses: Dict[str, Sequence[np.ndarray]], *,
                    prompt_len: int, response_len: int, frames: Optional[np.ndarray] = None,
                    weights: Optional[Sequence[float]] = None, positions: Optional[Sequence[np.ndarray]] = None,
                    record_index: Optional[Sequence[int]] = None) -> dict:
    """A batch from per-row prompt ids and per-response id rows (right-padded to prompt_len /
    response_len); `positions`: per-row position tables [.., len(prompt)] (padding gets 0)."""
    prompt_ids, prompt_mask = pad_rows(prompts, prompt_len)
    fields = dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                  prompt_lengths=prompt_mask.sum(axis=1).astype(np.int32),
                  pair_weight=np.ones(len(prompts), np.float32) if weights is None
                  else np.asarray(weights, np.float32))
    for name in response_names(kind):
        fields[f"{name}_ids"], fields[f"{name}_mask"] = pad_rows(responses[name], response_len)
    if frames is not None:
        fields["frames"] = np.asarray(frames)
    if positions is not None:
        fields["prompt_positions"] = position_table(positions, prompt_len)
    if record_index is not None:
        fields["record_index"] = np.asarray(record_index, np.int32)
    return make_batch(kind, **fields)
