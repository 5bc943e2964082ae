"""Batched generation for the Video-LLM over its fixed-size KV cache (shared/models.md §6).

    sampler = Sampler(model, SamplingConfig(max_new_tokens=64, temperature=0.0))
    out = sampler.generate(prompt_ids, prompt_mask, frames=frames, seed=0)   # SampleOutput

Per call: the video is encoded once per prompt; the RIGHT-padded prompts are prefilled into a
cache of P + max_new_tokens slots; the first token comes from each row's last valid prompt
position; the cache rows are then repeated k = num_samples times (rows grouped b·k + i: one
prefill serves every sample); a jitted `lax.while_loop` decodes one token per row per step
until every row emitted a stop id or max_new_tokens is reached. Ids >= vocab_limit (embedding
rows beyond the tokenizer) are never sampled. Row r's randomness at step t is
fold_in(fold_in(key(seed), t), r): deterministic per seed. One compile per (B, P, F) shape.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax.models.attention import KVCache


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy (argmax)
    top_p: float = 1.0  # nucleus mass; 1 = off
    top_k: int = 0  # 0 = off
    num_samples: int = 1  # k samples per prompt from one prefill
    stop_ids: tuple = (151645,)  # <|im_end|>; a row stops after emitting one
    vocab_limit: int = 0  # ids >= vocab_limit are never sampled; 0 = no limit
    pad_id: int = 0  # written after a row stopped
    banned_ids: tuple = ()  # never sampled (e.g. chat-control and placeholder tokens)
    min_new_tokens: int = 0  # stop ids cannot be sampled before this many tokens

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.num_samples < 1 or self.temperature < 0 or self.top_k < 0:
            raise ValueError(f"invalid SamplingConfig {self}: need max_new_tokens >= 1, num_samples >= 1, "
                             "temperature >= 0, top_k >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p={self.top_p}: expected in (0, 1]")


class SampleOutput(NamedTuple):
    tokens: np.ndarray  # int32 [B, k, T]; pad_id after the stop token
    logps: np.ndarray  # float32 [B, k, T]: log π(token) of the untempered model; 0 on padding
    lengths: np.ndarray  # int32 [B, k]: generated tokens before the stop token
    stopped: np.ndarray  # bool [B, k]: a stop id was emitted


def sample_logits(logits: jax.Array, key: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """[N, V] logits -> [N] ids: vocab_limit and banned_ids masks, then argmax (temperature 0) or a draw from
    softmax(logits / T) restricted to the top_k ids and to the smallest set of mass >= top_p."""
    logits = logits.astype(jnp.float32)
    neg = jnp.finfo(jnp.float32).min
    if cfg.vocab_limit:
        logits = jnp.where(jnp.arange(logits.shape[-1]) < cfg.vocab_limit, logits, neg)
    if cfg.banned_ids:
        logits = logits.at[..., jnp.asarray(cfg.banned_ids, jnp.int32)].set(neg)
    if cfg.temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = jax.lax.top_k(logits, cfg.top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, neg)
    if cfg.top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely ids
        keep_sorted = before < cfg.top_p
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, neg)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _repeat_cache(cache: KVCache, k: int) -> KVCache:
    if k == 1:
        return cache
    return KVCache(jnp.repeat(cache.k, k, axis=1), jnp.repeat(cache.v, k, axis=1),
                   jnp.repeat(cache.valid, k, axis=0), jnp.repeat(cache.index, k, axis=0),
                   jnp.repeat(cache.position, k, axis=0))


def _decode(graphdef, state, prompt_ids, prompt_mask, video_embeds, seed, *, cfg: SamplingConfig):
    model = nnx.merge(graphdef, state)
    b, p = prompt_ids.shape
    steps, k = cfg.max_new_tokens, cfg.num_samples
    hidden, cache = model.prefill(prompt_ids, video_embeds, prompt_mask, max_len=p + steps)
    lengths = prompt_mask.astype(jnp.int32).sum(axis=1)
    last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[:, 0]
    kernel = model.lm_head_kernel()

    def head(h):
        return jnp.dot(h.astype(jnp.float32), kernel.astype(jnp.float32))

    rows = b * k
    logits = jnp.repeat(head(last), k, axis=0)
    cache = _repeat_cache(cache, k)
    base = jax.random.key(seed)
    stops = jnp.asarray(cfg.stop_ids or (-1,), jnp.int32)
    row_ids = jnp.arange(rows)

    def cond(carry):
        t, _, _, done, _, _ = carry
        return (t < steps) & ~jnp.all(done)

    def body(carry):
        t, cache, logits, done, tokens, logps = carry
        keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(base, t), r))(row_ids)
        allowed = logits
        if cfg.min_new_tokens and cfg.stop_ids:
            early = t < cfg.min_new_tokens
            allowed = logits.at[:, stops].set(jnp.where(early, jnp.finfo(jnp.float32).min, logits[:, stops]))
        ids = jax.vmap(lambda l, key: sample_logits(l[None], key, cfg)[0])(allowed, keys)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), ids[:, None], axis=1)[:, 0]
        ids = jnp.where(done, cfg.pad_id, ids)
        logp = jnp.where(done, 0.0, logp)
        tokens = tokens.at[:, t].set(ids)
        logps = logps.at[:, t].set(logp)
        done = done | jnp.isin(ids, stops)
        # Rows already done still run (fixed shapes); what they write is never read.
        hidden, cache = model.decode_step(ids[:, None], cache)
        return t + 1, cache, head(hidden[:, 0]), done, tokens, logps

    init = (jnp.zeros((), jnp.int32), cache, logits, jnp.zeros((rows,), bool),
            jnp.full((rows, steps), cfg.pad_id, jnp.int32), jnp.zeros((rows, steps), jnp.float32))
    _, _, _, _, tokens, logps = jax.lax.while_loop(cond, body, init)
    is_stop = jnp.isin(tokens, stops) if cfg.stop_ids else jnp.zeros_like(tokens, bool)
    stopped = is_stop.any(axis=1)
    first = jnp.argmax(is_stop, axis=1).astype(jnp.int32)
    out_lengths = jnp.where(stopped, first, steps)
    shape = (b, k)
    return (tokens.reshape(shape + (steps,)), logps.reshape(shape + (steps,)),
            out_lengths.reshape(shape), stopped.reshape(shape))


class Sampler:
    """Compiled generation for one model and SamplingConfig (module docstring)."""

    def __init__(self, model, cfg: SamplingConfig):
        self.cfg = cfg
        self.graphdef, self.state = nnx.split(model)
        self.config = model.config
        self._decode = jax.jit(functools.partial(_decode, self.graphdef, cfg=cfg))
        self._encode = jax.jit(lambda state, frames: nnx.merge(self.graphdef, state).encode_video(frames))

    def generate(self, prompt_ids, prompt_mask, *, frames=None, video_embeds: Optional[jax.Array] = None,
                 seed: int = 0) -> SampleOutput:
        """Right-padded prompts [B, P] (+ normalised frames [B, F, H, W, 3] or their embeddings)
        -> SampleOutput as numpy arrays."""
        if frames is not None and video_embeds is not None:
            raise ValueError("pass frames or video_embeds, not both")
        if frames is not None:
            video_embeds = self._encode(self.state, jnp.asarray(frames))
        out = self._decode(self.state, jnp.asarray(prompt_ids, jnp.int32), jnp.asarray(prompt_mask, jnp.int32),
                           video_embeds, jnp.asarray(int(seed) & 0xFFFFFFFF, jnp.uint32))
        tokens, logps, lengths, stopped = jax.device_get(out)
        return SampleOutput(np.asarray(tokens), np.asarray(logps), np.asarray(lengths), np.asarray(stopped))
