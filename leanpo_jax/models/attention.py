"""Attention pieces shared by the Qwen2 decoder's full forward, shared-prefix suffix and KV cache.

Layouts (B batch, T/S query tokens, P prefix/cache slots, N query heads, K kv heads, hd head dim,
L layers):
- activations q [B, T, N, hd], k/v [B, T, K, hd] (GQA: N is a multiple of K);
- `KV(k, v)`: per-layer keys/values stacked on a leading layers axis, [L, B, P, K, hd], RoPE
  already applied to k;
- `KVCache(k, v, valid, index, position)`: a fixed-size decode cache [L, B, S_max, K, hd] with
  `valid` [B, S_max] (slots that may be attended to), `index` [B] (next slot to write) and
  `position` [B] (RoPE position of the next token).

Masks are boolean, True = may attend, shaped [B, 1, T_q, T_k] (one mask for all heads).
`jax.nn.dot_product_attention(is_causal=True)` aligns its causal mask top-left, which is only
right when T_q == T_k; every other case here gets an explicit mask.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np


class KV(NamedTuple):
    """Keys (RoPE applied) and values of every layer: each [L, B, P, K, hd]."""

    k: jax.Array
    v: jax.Array


class KVCache(NamedTuple):
    """Fixed-size decode cache; slot j of row b holds a token iff valid[b, j]."""

    k: jax.Array  # [L, B, S_max, K, hd]
    v: jax.Array  # [L, B, S_max, K, hd]
    valid: jax.Array  # [B, S_max] bool
    index: jax.Array  # [B] int32: next slot written by decode_step
    position: jax.Array  # [B] int32: RoPE position of the next token


def apply_rope(x: jax.Array, positions: jax.Array, theta: float, linear_factor: float = 1.0,
               mrope_section: Optional[Tuple[int, ...]] = None) -> jax.Array:
    """Rotate-half RoPE: x*cos(p*w) + rotate_half(x)*sin(p*w), w_j = theta^(-2j/hd) / linear_factor
    (linear scaling: p / factor, as HF's "linear" rope_type divides inv_freq by the factor).

    x [B, T, heads, hd], positions [B, T] integers. Angles are formed in f32 from the integer
    positions (bf16 angles are useless beyond a few hundred tokens); the result has x's dtype.

    M-RoPE (Qwen2-VL, `mrope_section` = (s_t, s_h, s_w), sum hd/2): positions may be
    [B, 3, T] (t, h, w axes); frequency j takes its position from axis a(j), where the
    frequencies 0..s_t-1 use t, the next s_h use h, the last s_w use w, i.e. angle_j =
    p[a(j)] * w_j, the same j in both rotate-half halves (transformers'
    `recomposition_frequencies`). [B, T] positions mean all three axes equal, which is plain RoPE.
    """
    hd = x.shape[-1]
    inv_freq = 1.0 / (jnp.float32(theta) ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    if linear_factor != 1.0:
        inv_freq = inv_freq / jnp.float32(linear_factor)
    if positions.ndim == 3:
        if mrope_section is None:
            raise ValueError(f"positions {positions.shape} have an axes dimension, but the decoder "
                             "has no mrope_section (plain RoPE takes [B, T])")
        axis_of = mrope_axis_of_frequency(mrope_section, hd)
        # Pick each frequency's axis before multiplying: the same f32 products as HF's
        # multiply-then-select. [B, 3, T] -> [B, T, hd/2].
        positions = jnp.moveaxis(positions[:, axis_of, :], 1, 2)
        angles = positions.astype(jnp.float32) * inv_freq
    else:
        angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, hd/2]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def mrope_axis_of_frequency(mrope_section: Tuple[int, ...], head_dim: int) -> np.ndarray:
    """[hd/2] int: the position axis (0 t, 1 h, 2 w) of each RoPE frequency under M-RoPE:
    section i covers the next mrope_section[i] frequencies and reads axis i % 3 (HF's rule)."""
    if sum(mrope_section) != head_dim // 2:
        raise ValueError(f"mrope_section {tuple(mrope_section)} sums to {sum(mrope_section)}, "
                         f"not head_dim / 2 = {head_dim // 2}")
    return np.concatenate([np.full(n, i % 3, np.int32) for i, n in enumerate(mrope_section)])


def self_attention_mask(key_mask: jax.Array) -> jax.Array:
    """[B, T] key validity -> [B, 1, T, T]: query i sees key j iff j <= i and key j is valid.

    A query always sees itself, so a padding query never has an empty row (no NaN); valid
    queries are unaffected because their own key is valid.
    """
    t = key_mask.shape[-1]
    idx = jnp.arange(t)
    causal = idx[:, None] >= idx[None, :]
    allowed = causal[None] & (key_mask[:, None, :] | jnp.eye(t, dtype=bool)[None])
    return allowed[:, None]


def suffix_attention_mask(
    kv_mask: jax.Array, own_mask: Optional[jax.Array], seq_len: int, group: int
) -> jax.Array:
    """Mask for `group` suffix rows per prefix row, merged into one query block per prefix.

    kv_mask [Bp, P] (prefix key validity); own_mask [Bp * group, S] or None (suffix key
    validity). Returns [Bp, 1, group*S, P + group*S]: every query sees the valid prefix keys,
    and within the merged block only the keys of its own row, causally (a block-diagonal
    causal mask), and always itself.
    """
    bp = kv_mask.shape[0]
    n = group * seq_len
    idx = jnp.arange(n)
    own = (idx[:, None] // seq_len == idx[None, :] // seq_len) & (idx[:, None] >= idx[None, :])
    own = jnp.broadcast_to(own[None], (bp, n, n))
    if own_mask is not None:
        key_ok = own_mask.reshape(bp, 1, n) | jnp.eye(n, dtype=bool)[None]
        own = own & key_ok
    prefix = jnp.broadcast_to(kv_mask[:, None, :].astype(bool), (bp, n, kv_mask.shape[-1]))
    return jnp.concatenate([prefix, own], axis=-1)[:, None]


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: Optional[jax.Array],
    implementation: Optional[str],
    *,
    causal: bool = True,
    kv_lengths: Optional[jax.Array] = None,
) -> jax.Array:
    """softmax(q k^T / sqrt(hd) + mask) v with GQA. mask None means plain causal (T_q == T_k),
    or, with causal=False, every query attending to every key (the vision tower).
    `kv_lengths` [B] int32 (mask None only): row b attends to keys j < kv_lengths[b] only, a
    padding mask cuDNN applies natively (Qwen2.5-VL's ragged windows) with no [T, S] tensor."""
    if kv_lengths is not None and mask is not None:
        raise ValueError("attend: pass either mask or kv_lengths, not both")
    t, s = q.shape[1], k.shape[1]
    if mask is None and causal and t != s:
        raise ValueError(
            f"causal attention without a mask needs equal query/key lengths, got {t} vs {s} "
            "(is_causal would align top-left)"
        )
    pad_t, pad_s = (t % 2, s % 2) if implementation == "cudnn" else (0, 0)
    if pad_t or pad_s:
        # cuDNN's differentiated kernels reject odd lengths: add one dropped query and/or one
        # key nobody attends to (causally in the future, or masked with cuDNN's finite
        # large-negative bias, so a fully masked padding row is uniform, never NaN).
        q = jnp.pad(q, ((0, 0), (0, pad_t), (0, 0), (0, 0)))
        k, v = (jnp.pad(x, ((0, 0), (0, pad_s), (0, 0), (0, 0))) for x in (k, v))
        if mask is not None:
            mask = jnp.pad(mask, ((0, 0), (0, 0), (0, pad_t), (0, pad_s)))
    if mask is None:
        # Non-causal: a padded key must stay hidden, by length rather than a materialised mask.
        lengths = kv_lengths
        if lengths is None and pad_s and not causal:
            lengths = jnp.full((q.shape[0],), s, jnp.int32)
        out = jax.nn.dot_product_attention(q, k, v, is_causal=causal, key_value_seq_lengths=lengths,
                                           implementation=implementation)
    else:
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
    return out[:, :t]


def write_rows(buffer: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
    """buffer[:, b, index[b]:index[b]+S] = new[:, b] for every row b (per-row offsets).

    buffer [L, B, S_max, ...], new [L, B, S, ...], index [B]. dynamic_update_slice clamps an
    out-of-range start, so callers must keep index + S <= S_max.
    """

    def one_row(buf, upd, i):
        start = (0, i) + (0,) * (buf.ndim - 2)
        return jax.lax.dynamic_update_slice(buf, upd.astype(buf.dtype), start)

    return jax.vmap(one_row, in_axes=(1, 1, 0), out_axes=1)(buffer, new, index)


def mark_valid(valid: jax.Array, index: jax.Array, count: int) -> jax.Array:
    """valid[b, index[b]:index[b]+count] = True."""
    slots = jnp.arange(valid.shape[-1])[None, :]
    return valid | ((slots >= index[:, None]) & (slots < index[:, None] + count))


def repeat_cache(cache: KVCache, times: int) -> KVCache:
    """Repeats each row `times` times (rows grouped: row b -> rows b*times ... b*times+times-1),
    e.g. to draw several samples from one prefill."""
    return KVCache(
        k=jnp.repeat(cache.k, times, axis=1),
        v=jnp.repeat(cache.v, times, axis=1),
        valid=jnp.repeat(cache.valid, times, axis=0),
        index=jnp.repeat(cache.index, times, axis=0),
        position=jnp.repeat(cache.position, times, axis=0),
    )


def with_axes(positions: jax.Array, axes: int) -> jax.Array:
    """[B, T] text positions -> [B, axes, T] (every axis equal, as M-RoPE reads text);
    [B, A, T] tables pass through."""
    if positions.ndim == 3:
        return positions
    return jnp.broadcast_to(positions[:, None, :], (positions.shape[0], axes, positions.shape[1]))


def next_position(positions: jax.Array, valid: jax.Array) -> jax.Array:
    """[B] int32: 1 + the largest position of each row's valid tokens over every axis (M-RoPE:
    text after a vision block, and decoding, resume at the running maximum + 1); positions
    [B, T] or [B, A, T], valid [B, T] bool. A row with no valid token gets 0."""
    if positions.ndim == 3:
        valid = valid[:, None, :]
    flat = jnp.where(valid, positions + 1, 0).reshape(positions.shape[0], -1)
    return jnp.max(flat, axis=1).astype(jnp.int32)
