"""Batched generation for any family's Video-LLM over its fixed-size KV cache (docs/model_facts.md §12).

    sampler = Sampler(model, SamplingConfig(max_new_tokens=64, temperature=0.0, stop_ids=(tok.end_id,)))
    out = sampler.generate(prompt_ids, prompt_mask, frames=frames, seed=0)   # SampleOutput
    # or phase by phase (benchmarks): sampler.decode(sampler.prefill(ids, mask, video_embeds=v))

Contract per call:
- The video is encoded once per prompt (`encode`, or pass `video_embeds`).
- The RIGHT-padded prompts [B, P] are prefilled at batch B into a cache of P + max_new_tokens
  slots. Token 0 is drawn from the hidden state at each row's last valid prompt position
  (sum(mask) - 1), so one prefill yields all k = num_samples first tokens.
- The cache rows are then repeated k times, grouped: row b*k + i is sample i of prompt b
  (b-major, exactly `tokens.reshape(B, k, T)`). One prefill serves every sample; nothing is
  recomputed per sample.
- A jitted `lax.while_loop` decodes one token per row per step. It runs while some row is not
  done and t < max_new_tokens, so max_new_tokens - 1 decode steps at most: the step after the
  last token is never run.
- Ids >= vocab_limit (embedding rows beyond the tokenizer) and banned_ids are never sampled.
- Randomness: a seed s (any int, taken mod 2**64) names the key K(s) = fold_in(key(s mod 2**32),
  s >> 32), and an output row with key R uses fold_in(R, t) at step t.
  * `seed=[s_0, ..., s_{B-1}]` (one per prompt): sample i of prompt b has R = fold_in(K(s_b), i).
    A row's tokens then depend only on its seed and its own inputs, not on its position, the
    other rows of the batch or the batch size (how self-generation stays reproducible).
  * `seed=s` (a scalar): output row j = b*k + i has R = fold_in(K(s), j): deterministic per seed
    and per row position; a prompt moved to another row draws other samples.
- The model is split once (nnx.split). The phases are jitted pure functions of its state:
  one compile per (B, P, F) shape and config, reused across calls.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax.models.attention import KVCache, repeat_cache
from leanpo_jax.models.merge import check_video_placeholders
from leanpo_jax.models.registry import family_of

_NEG = float(np.finfo(np.float32).min)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy (argmax)
    top_p: float = 1.0  # nucleus mass; 1 = off
    top_k: int = 0  # 0 = off
    num_samples: int = 1  # k samples per prompt from ONE prefill (the cache is repeated, not recomputed)
    # A row stops after emitting one. No default: the end-of-turn id is the chat template's
    # (`ChatTokenizer.end_id`: <|im_end|> for ChatML, </s> for vicuna_v1), which
    # `self_generate.chat_sampling_config` sets; () = every row runs to max_new_tokens.
    stop_ids: tuple = ()
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
    tokens: np.ndarray  # int32 [B, k, T]; the stop token is kept, pad_id after it
    logps: np.ndarray  # float32 [B, k, T]: log π(token) of the raw model (temperature 1, no truncation); 0 on padding
    lengths: np.ndarray  # int32 [B, k]: generated tokens before the stop token
    stopped: np.ndarray  # bool [B, k]: a stop id was emitted (False = hit max_new_tokens)


class DecodeState(NamedTuple):
    """What `Sampler.prefill` hands to `Sampler.decode` (device arrays; the cache still has B rows)."""

    cache: KVCache  # [L, B, P + T, K, hd]
    tokens: jax.Array  # int32 [B*k, T]: token 0 filled, pad_id elsewhere
    logps: jax.Array  # float32 [B*k, T]
    done: jax.Array  # bool [B*k]
    keys: jax.Array  # PRNG keys [B*k]: each output row's own stream (the module docstring)


def sample_logits(logits: jax.Array, key: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """[N, V] logits -> [N] int32 ids. Pure and jit-able; all N rows share `key`.

    The vocab_limit and banned_ids masks come first. Temperature 0 is argmax. Otherwise a draw
    from softmax(logits / T), restricted to the top_k ids and to the smallest most-likely set
    whose mass is >= top_p (renormalised by the draw itself).
    """
    logits = logits.astype(jnp.float32)
    if cfg.vocab_limit:
        logits = jnp.where(jnp.arange(logits.shape[-1]) < cfg.vocab_limit, logits, _NEG)
    if cfg.banned_ids:
        logits = logits.at[..., jnp.asarray(cfg.banned_ids, jnp.int32)].set(_NEG)
    if cfg.temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = jax.lax.top_k(logits, cfg.top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, _NEG)  # ties at the k-th value are all kept
    if cfg.top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # An id is kept iff the strictly more likely ids hold < top_p: the smallest set >= top_p.
        before = jnp.cumsum(probs, axis=-1) - probs
        keep = jnp.zeros(logits.shape, bool).at[jnp.arange(logits.shape[0])[:, None], order].set(before < cfg.top_p)
        logits = jnp.where(keep, logits, _NEG)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _head(hidden: jax.Array, kernel: jax.Array) -> jax.Array:
    # Compute-dtype operands with f32 accumulation, as in the training scorer
    # (losses.chunked_sequence_logps). Sampled logps then match training-time scores. A bf16
    # [D, V] kernel is never copied to f32 inside the decode loop.
    return jnp.dot(hidden, kernel, preferred_element_type=jnp.float32)


def _seed_key(words: jax.Array) -> jax.Array:
    """uint32 [2] (low, high word of a 64-bit seed) -> its key K(seed)."""
    return jax.random.fold_in(jax.random.key(words[0]), words[1])


def _row_keys(words: jax.Array, prompts: int, k: int) -> jax.Array:
    """The B*k output rows' keys (the module docstring) from `seed_words`: uint32 [2] (one seed
    for the batch: row j gets fold_in(K, j)) or [B, 2] (a seed per prompt: row b*k + i gets
    fold_in(K_b, i))."""
    if words.ndim == 1:
        return jax.vmap(lambda j: jax.random.fold_in(_seed_key(words), j))(jnp.arange(prompts * k))
    per_prompt = jax.vmap(_seed_key)(words)
    keys = jax.vmap(lambda key: jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(k)))(per_prompt)
    return keys.reshape(prompts * k)


def _pick(logits, t, done, tokens, logps, row_keys, cfg: SamplingConfig):
    """Step t for every row: sample, record the token and its raw logp, update `done`."""
    keys = jax.vmap(lambda key: jax.random.fold_in(key, t))(row_keys)
    allowed = logits
    if cfg.min_new_tokens and cfg.stop_ids:
        stops = jnp.asarray(cfg.stop_ids, jnp.int32)
        early = t < cfg.min_new_tokens
        allowed = logits.at[:, stops].set(jnp.where(early, _NEG, logits[:, stops]))
    ids = jax.vmap(lambda l, key: sample_logits(l[None], key, cfg)[0])(allowed, keys)
    # log π under the raw model distribution, not the tempered / truncated one that was sampled.
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), ids[:, None], axis=1)[:, 0]
    ids = jnp.where(done, cfg.pad_id, ids)
    logp = jnp.where(done, 0.0, logp)
    tokens = jax.lax.dynamic_update_slice(tokens, ids[:, None], (0, t))
    logps = jax.lax.dynamic_update_slice(logps, logp[:, None], (0, t))
    if cfg.stop_ids:
        done = done | jnp.isin(ids, jnp.asarray(cfg.stop_ids, jnp.int32))
    return ids, done, tokens, logps


def _prefill(graphdef, state, prompt_ids, prompt_mask, video_embeds, seeds, positions, *,
             cfg: SamplingConfig) -> DecodeState:
    model = nnx.merge(graphdef, state)
    b, p = prompt_ids.shape
    steps, k = cfg.max_new_tokens, cfg.num_samples
    hidden, cache = model.prefill(prompt_ids, video_embeds, prompt_mask, max_len=p + steps, positions=positions)
    last = jnp.take_along_axis(hidden, (prompt_mask.astype(jnp.int32).sum(axis=1) - 1)[:, None, None], axis=1)
    logits = jnp.repeat(_head(last[:, 0], model.lm_head_kernel()), k, axis=0)  # [B*k, V], grouped b*k + i
    rows = b * k
    keys = _row_keys(seeds, b, k)
    tokens = jnp.full((rows, steps), cfg.pad_id, jnp.int32)
    _, done, tokens, logps = _pick(logits, 0, jnp.zeros((rows,), bool), tokens,
                                   jnp.zeros((rows, steps), jnp.float32), keys, cfg)
    return DecodeState(cache, tokens, logps, done, keys)


def _decode(graphdef, state, ds: DecodeState, *, cfg: SamplingConfig):
    model = nnx.merge(graphdef, state)
    steps, k = cfg.max_new_tokens, cfg.num_samples
    kernel = model.lm_head_kernel()
    # Repeated here rather than in _prefill so that the prefill timing covers the prompt only.
    cache = repeat_cache(ds.cache, k) if k > 1 else ds.cache

    def cond(carry):
        t, _, done, _, _ = carry
        return (t < steps) & ~jnp.all(done)

    def body(carry):
        t, cache, done, tokens, logps = carry
        prev = jax.lax.dynamic_slice_in_dim(tokens, t - 1, 1, axis=1)  # [rows, 1]
        # Rows already done still run (fixed shapes). They feed pad_id, and what they write
        # into their own cache rows is never read.
        hidden, cache = model.decode_step(prev, cache)
        _, done, tokens, logps = _pick(_head(hidden[:, 0], kernel), t, done, tokens, logps, ds.keys, cfg)
        return t + 1, cache, done, tokens, logps

    init = (jnp.ones((), jnp.int32), cache, ds.done, ds.tokens, ds.logps)
    _, _, _, tokens, logps = jax.lax.while_loop(cond, body, init)
    if cfg.stop_ids:
        is_stop = jnp.isin(tokens, jnp.asarray(cfg.stop_ids, jnp.int32))
        stopped = is_stop.any(axis=1)
        lengths = jnp.where(stopped, jnp.argmax(is_stop, axis=1), steps).astype(jnp.int32)
    else:
        stopped = jnp.zeros(tokens.shape[:1], bool)
        lengths = jnp.full(tokens.shape[:1], steps, jnp.int32)
    b = tokens.shape[0] // k
    return (tokens.reshape(b, k, steps), logps.reshape(b, k, steps), lengths.reshape(b, k),
            stopped.reshape(b, k))


def seed_words(seed: Union[int, Sequence[int], np.ndarray], prompts: int) -> np.ndarray:
    """A seed (an int) or one seed per prompt ([prompts] ints), each taken mod 2**64 -> uint32
    words: [2] or [prompts, 2], the low word first."""
    values = np.asarray(seed, dtype=object)
    if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != prompts):
        raise ValueError(f"seed of shape {values.shape}: expected an int or one seed per prompt ({prompts})")
    # Python ints: arbitrary size and sign, no numpy overflow or wrap-around rules to reason about.
    wrapped = [int(v) % 2**64 for v in values.reshape(-1)]
    words = np.asarray([[v & 0xFFFFFFFF, v >> 32] for v in wrapped], np.uint32)
    return words[0] if values.ndim == 0 else words


class Sampler:
    """Compiled generation for one model and SamplingConfig (see the module docstring).

    The model's weights are captured at construction (nnx.split). Build a new Sampler, or
    assign `sampler.state = nnx.state(model)`, after the model changes.
    """

    def __init__(self, model, cfg: SamplingConfig):
        self.cfg = cfg
        self.config = model.config
        # The placeholder id as the family's data interface names it (not a config attribute).
        self.video_token_index = family_of(model.config).interface(model.config).video_token_index
        self.graphdef, self.state = nnx.split(model)
        graphdef = self.graphdef
        self._encode = jax.jit(lambda state, frames: nnx.merge(graphdef, state).encode_video(frames))
        self._prefill = jax.jit(lambda state, *a: _prefill(graphdef, state, *a, cfg=cfg))
        # No donation: no decode-state buffer matches an output (the cache is repeated and not
        # returned), so XLA could not reuse any of them.
        self._decode = jax.jit(lambda state, ds: _decode(graphdef, state, ds, cfg=cfg))

    def encode(self, frames) -> jax.Array:
        """Normalised frames [B, F, H, W, 3] -> video embeddings [B, N, D] (jitted per F)."""
        return self._encode(self.state, jnp.asarray(frames))

    def prefill(self, prompt_ids, prompt_mask, *, frames=None, video_embeds: Optional[jax.Array] = None,
                seed: Union[int, Sequence[int], np.ndarray] = 0, positions=None) -> DecodeState:
        """Right-padded prompts [B, P] (+ frames or their embeddings) -> DecodeState with token 0
        drawn. Each prompt row must hold exactly num_video_tokens(F) placeholder ids when a
        video is given. `seed`: one int for the batch or one per prompt (the module docstring).
        `positions`: the family's prompt position table (None: 0..P-1); decoding continues one
        past each row's last valid position."""
        if frames is not None and video_embeds is not None:
            raise ValueError("pass frames or video_embeds, not both")
        prompt_mask = np.asarray(prompt_mask, np.int32)
        if prompt_mask.ndim != 2 or (prompt_mask[:, 0] < 1).any() or (np.diff(prompt_mask, axis=1) > 0).any():
            # The first token comes from position sum(mask) - 1, which is only right for right padding.
            raise ValueError("prompt_mask must be [B, P], right-padded (1...1 0...0), with a valid first token")
        if frames is not None:
            video_embeds = self.encode(frames)
        ids = jnp.asarray(prompt_ids, jnp.int32)
        if video_embeds is not None:  # the host-side placeholder check that a traced embed skips
            check_video_placeholders(np.asarray(prompt_ids), self.video_token_index, video_embeds.shape[1])
        return self._prefill(self.state, ids, jnp.asarray(prompt_mask), video_embeds,
                             jnp.asarray(seed_words(seed, prompt_mask.shape[0])),
                             None if positions is None else jnp.asarray(positions, jnp.int32))

    def decode(self, ds: DecodeState):
        """The decode loop over a DecodeState -> device arrays
        (tokens [B, k, T], logps [B, k, T], lengths [B, k], stopped [B, k])."""
        return self._decode(self.state, ds)

    def generate(self, prompt_ids, prompt_mask, *, frames=None, video_embeds: Optional[jax.Array] = None,
                 seed: Union[int, Sequence[int], np.ndarray] = 0, positions=None) -> SampleOutput:
        """Right-padded prompts [B, P] (+ normalised frames [B, F, H, W, 3] or their embeddings
        [B, N, D]) -> SampleOutput as numpy arrays (shapes in SampleOutput)."""
        out = self.decode(self.prefill(prompt_ids, prompt_mask, frames=frames, video_embeds=video_embeds,
                                       seed=seed, positions=positions))
        tokens, logps, lengths, stopped = jax.device_get(out)
        return SampleOutput(np.asarray(tokens), np.asarray(logps), np.asarray(lengths), np.asarray(stopped))
