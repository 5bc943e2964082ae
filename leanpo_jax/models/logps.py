"""Response log-probs of a model on a batch: the shared-prefix and the naive layout.

    logps = pair_logps(model, normalize_batch(batch, model.config))   # {chosen, chosen_tokens, ...}

Shared layout (default), per pair (start = the prompt's next position, y = a response):
    v          = encode_video(frames)               once per pair (stop_gradient unless the
                                                    vision side trains)
    h_p, h_s   = packed(prompt, [y_c[:-1]; y_r[:-1]]) one pass over [prompt ‖ y_c ‖ y_r]: the
                                                    prompt causally at its positions (the
                                                    batch's prompt_positions, or 0..P-1), each
                                                    response (positions start + j) over the
                                                    prompt's valid keys and its own, causally
    log π(y_0) from h_p[L-1]; log π(y_j), j >= 1, from h_s[j-1]
Naive layout: g·B sequences [prompt[:L] ‖ y ‖ 0…] of static length P + R, the video encoded per
sequence (duplicated, as other trainers do), one full causal forward; log π(y_j) from h[L-1+j].
Both give Σ_j mask_j·log π(y_j) and Σ_j mask_j per response (`losses.response_logps`).
Every family's model implements the calls used here (models/family.py MODEL_PROTOCOL).
"""

from __future__ import annotations

from typing import Dict, Tuple

import jax
import jax.numpy as jnp

from leanpo_jax import losses
from leanpo_jax.data.video import normalize_frames
from leanpo_jax.models.registry import family_of

LAYOUTS = ("shared", "naive")


def _group_rows(arrays) -> jax.Array:
    """g arrays [B, ...] -> [gB, ...] interleaved rows [a0, b0, .., a1, b1, ..] (row r: pair r // g)."""
    g = len(arrays)
    return jnp.stack(arrays, axis=1).reshape((g * arrays[0].shape[0],) + arrays[0].shape[1:])


def pair_logps(model, batch: Dict[str, jax.Array], *, layout: str = "shared",
               chunk_size: int = 128, train_vision: bool = False,
               names: Tuple[str, ...] = ("chosen", "rejected")) -> Dict[str, jax.Array]:
    """-> {name}: summed response log-probs [B] and {name}_tokens: counts [B] for each name.

    The responses are batch[f"{name}_ids"] / batch[f"{name}_mask"] (default chosen and
    rejected; ("chosen",) alone for SFT). `batch["frames"]` must already be normalised floats.
    `train_vision=False` stops the gradient at the video embeddings (the frozen tower is never
    differentiated).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; expected one of {LAYOUTS}")
    g = len(names)
    prompt, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
    lengths = batch["prompt_lengths"].astype(jnp.int32)
    prompt_positions = batch.get("prompt_positions")
    responses = _group_rows([batch[f"{n}_ids"] for n in names]).astype(jnp.int32)
    masks = _group_rows([batch[f"{n}_mask"] for n in names])
    rows, resp_len = responses.shape
    row_lengths = jnp.repeat(lengths, g)
    # Response token j sits at position start + j: the prompt's next position.
    row_starts = jnp.repeat(response_start(prompt_positions, prompt_mask, lengths), g)
    # Text-only models (config.vision None) and batches without frames run the LLM alone.
    frames = batch.get("frames") if model.vision_tower is not None else None

    def encode(f):
        if f is None:
            return None
        video = model.encode_video(f)
        return video if train_vision else jax.lax.stop_gradient(video)

    if layout == "shared":
        video = encode(frames)
        hidden_s = None
        if resp_len > 1:  # one pass over [prompt ‖ its responses] (model.packed)
            positions = row_starts[:, None] + jnp.arange(resp_len - 1, dtype=jnp.int32)[None]
            hidden_p, hidden_s = model.packed(prompt, video, responses[:, :-1], positions, kv_mask=prompt_mask,
                                              prompt_positions=prompt_positions)
        else:
            hidden_p, _ = model.prefix(prompt, video, positions=prompt_positions)
        last = jnp.take_along_axis(hidden_p, (lengths - 1)[:, None, None], axis=1)  # [B, 1, D]
        hidden = jnp.repeat(last, g, axis=0)
        if hidden_s is not None:
            hidden = jnp.concatenate([hidden, hidden_s.astype(hidden.dtype)], axis=1)
    else:
        video = encode(None if frames is None else jnp.repeat(frames, g, axis=0))
        seq_len = prompt.shape[1] + resp_len
        j = jnp.arange(seq_len, dtype=jnp.int32)[None]
        rows_prompt = jnp.repeat(prompt, g, axis=0).astype(jnp.int32)
        from_prompt = jnp.take_along_axis(rows_prompt, jnp.minimum(j, prompt.shape[1] - 1), axis=1)
        offset = j - row_lengths[:, None]
        from_resp = jnp.take_along_axis(responses, jnp.clip(offset, 0, resp_len - 1), axis=1)
        ids = jnp.where(offset < 0, from_prompt, jnp.where(offset < resp_len, from_resp, 0))
        full_positions = None
        if prompt_positions is not None:
            rows_pos = jnp.repeat(prompt_positions.astype(jnp.int32), g, axis=0)
            last = prompt.shape[1] - 1
            pick = jnp.minimum(j, last)
            pick = jnp.broadcast_to(pick.reshape((1,) * (rows_pos.ndim - 1) + (-1,)),
                                    rows_pos.shape[:-1] + (seq_len,))
            from_pos = jnp.take_along_axis(rows_pos, pick, axis=-1)
            starts = row_starts.reshape((-1,) + (1,) * (rows_pos.ndim - 1))
            offsets = offset.reshape(offset.shape[:1] + (1,) * (rows_pos.ndim - 2) + offset.shape[1:])
            full_positions = jnp.where(offsets < 0, from_pos, starts + offsets)
        # Right padding: plain causal attention is exact at every valid position.
        full = model(ids, video, positions=full_positions)
        picks = row_lengths[:, None] - 1 + jnp.arange(resp_len, dtype=jnp.int32)[None]
        hidden = jnp.take_along_axis(full, picks[..., None], axis=1)

    sums, counts = losses.response_logps(
        hidden, model.lm_head_kernel(), responses, masks, chunk_size=chunk_size
    )
    sums, counts = sums.reshape(-1, g), counts.reshape(-1, g)
    out = {}
    for i, n in enumerate(names):
        out[n], out[f"{n}_tokens"] = sums[:, i], counts[:, i]
    return out


def response_start(prompt_positions, prompt_mask, prompt_lengths) -> jax.Array:
    """[B] position of each row's first response token: the prompt length without a position
    table, else one past the largest position of the row's valid prompt tokens (any axes)."""
    if prompt_positions is None:
        return prompt_lengths.astype(jnp.int32)
    valid = prompt_mask.astype(bool).reshape(prompt_mask.shape[:1] + (1,) * (prompt_positions.ndim - 2)
                                             + prompt_mask.shape[1:])
    masked = jnp.where(valid, prompt_positions.astype(jnp.int32), -1)
    return masked.reshape(masked.shape[0], -1).max(axis=1) + 1



def normalize_batch(batch, config):
    """Frames uint8 -> float32 with the model's frame mean/std (done on device, in the step);
    dropped for text-only models. `config`: the model's family config."""
    batch = dict(batch)
    frames = family_of(config).interface(config).frames
    if frames is None:
        batch.pop("frames", None)
    elif "frames" in batch and jnp.issubdtype(batch["frames"].dtype, jnp.integer):
        batch["frames"] = normalize_frames(batch["frames"], frames.mean, frames.std)
    return batch
