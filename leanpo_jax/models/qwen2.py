"""Qwen2 / Llama decoder in Flax NNX: stacked layers under `lax.scan`, returns hidden states.

Per layer (pre-norm): x += o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x))));
x += down(silu(gate(n2(x))) * up(n2(x))); the output is norm(x) [B, T, D], never logits
(`lm_head_kernel()` gives the [D, V] matrix; apply it only where log-probs are needed).

Parameters (L layers, D hidden, V vocab, N heads, K kv heads, hd head dim, F mlp) with their
logical axes (`out_sharding` metadata) and HF tensors ({p} = prefix, default "model."; {l} =
{p}layers.{i}.; "T": linear weight [out, in] transposed, then the head axis split out; biases
[N*hd] -> [N, hd]; per-layer tensors are stacked on a leading layers axis):
path               shape       logical axes                      HF tensor
embed_tokens       [V,D]       vocab, embed                      {p}embed_tokens.weight
layers.input_norm  [L,D]       layers, norm                      {l}input_layernorm.weight
layers.q_kernel    [L,D,N,hd]  layers, embed, heads, head_dim    {l}self_attn.q_proj.weight T
layers.q_bias      [L,N,hd]    layers, heads, head_dim           {l}self_attn.q_proj.bias
layers.k_kernel    [L,D,K,hd]  layers, embed, kv_heads, head_dim {l}self_attn.k_proj.weight T
layers.k_bias      [L,K,hd]    layers, kv_heads, head_dim        {l}self_attn.k_proj.bias
layers.v_kernel    [L,D,K,hd]  layers, embed, kv_heads, head_dim {l}self_attn.v_proj.weight T
layers.v_bias      [L,K,hd]    layers, kv_heads, head_dim        {l}self_attn.v_proj.bias
layers.o_kernel    [L,N,hd,D]  layers, heads, head_dim, embed    {l}self_attn.o_proj.weight T
layers.post_norm   [L,D]       layers, norm                      {l}post_attention_layernorm.weight
layers.gate_kernel [L,D,F]     layers, embed, mlp                {l}mlp.gate_proj.weight T
layers.up_kernel   [L,D,F]     layers, embed, mlp                {l}mlp.up_proj.weight T
layers.down_kernel [L,F,D]     layers, mlp, embed                {l}mlp.down_proj.weight T
final_norm         [D]         norm                              {p}norm.weight
lm_head            [D,V]       embed, vocab                      lm_head.weight T (untied only)
With tied embeddings there is no lm_head Param: lm_head_kernel() is embed_tokens.T.
The HF-tensor side of this table (names, transposes, state dicts in and out) is models/qwen2_hf.py.
The q/k/v biases exist only when `TextConfig.attention_bias` (Qwen2); Llama has none.

Entry points (embeddings in, because video embeddings are merged into the text first):
- `embed(ids)`, `__call__(embeds, positions=None, mask=None) -> hidden`;
- `prefix(embeds, positions=None, mask=None) -> (hidden, KV)`;
- `suffix(embeds, positions, kv_prefix, kv_mask=None, mask=None) -> hidden`;
- `packed(prompt_embeds, response_embeds, positions, kv_mask, mask, prompt_positions)
  -> (hidden_p, hidden_s)`:
  prefix + suffix in one pass (the train step's shared layout);
- `init_cache(batch, max_len)`, `prefill(embeds, positions, mask, max_len=) -> (hidden, cache)`,
  `decode_step(embeds, cache, positions=None) -> (hidden, cache)` (the same suffix code).
`mask` is [B, T] key validity; positions default to 0..T-1. With `config.mrope_section`
(M-RoPE) every positions argument is [B, T] (text: all three axes equal) or a [B, 3, T]
(t, h, w) table; `packed` broadcasts [B, S] response positions to the prompt table's axes,
`prefill` sets the cache's next position to 1 + the largest valid position over all axes, and
decoding continues from it on all three axes. Without a mask, attention is plain
causal (`is_causal=True`, the fused kernel); with right padding that is already exact at every
valid position (padded keys only follow valid queries), so callers may omit the mask there;
an explicit mask is [B, 1, T, T] (cuDNN turns it into a bias of that size), fine for suffixes
and decoding, too big for a 13k-token prompt. With "cudnn", odd lengths are padded by one.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from leanpo_jax.models.attention import (
    KV, KVCache, apply_rope, attend, mark_valid, mrope_axis_of_frequency, next_position,
    self_attention_mask, suffix_attention_mask, with_axes, write_rows,
)
from leanpo_jax.models import lora as lora_lib
from leanpo_jax.models.text_config import TextConfig
from leanpo_jax.models.params import logical_param, normal_init


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """weight * x / sqrt(mean(x^2) + eps), statistics in f32, result in x's dtype (as HF)."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * normed.astype(x.dtype)


class _Init:
    """Creates the decoder's Params (logical axis names, seeded inits) in one param dtype."""

    def __init__(self, rngs: nnx.Rngs, param_dtype, eager_sharding: Optional[bool]):
        self.rngs, self.dtype, self.eager = rngs, param_dtype, eager_sharding

    def normal(self, shape, names, std=0.02) -> nnx.Param:
        return logical_param(normal_init(self.rngs, shape, std, self.dtype), names, self.eager)

    def const(self, shape, names, fill) -> nnx.Param:
        return logical_param(jnp.full(shape, fill, self.dtype), names, self.eager)


# Layer parameter name -> (logical axes, HF name inside layer i, transform kind).
_LAYER_PARAMS = {
    "input_norm": (("layers", "norm"), "input_layernorm.weight", "as_is"),
    "q_kernel": (("layers", "embed", "heads", "head_dim"), "self_attn.q_proj.weight", "kernel"),
    "q_bias": (("layers", "heads", "head_dim"), "self_attn.q_proj.bias", "vector"),
    "k_kernel": (("layers", "embed", "kv_heads", "head_dim"), "self_attn.k_proj.weight", "kernel"),
    "k_bias": (("layers", "kv_heads", "head_dim"), "self_attn.k_proj.bias", "vector"),
    "v_kernel": (("layers", "embed", "kv_heads", "head_dim"), "self_attn.v_proj.weight", "kernel"),
    "v_bias": (("layers", "kv_heads", "head_dim"), "self_attn.v_proj.bias", "vector"),
    "o_kernel": (("layers", "heads", "head_dim", "embed"), "self_attn.o_proj.weight", "kernel_out"),
    "post_norm": (("layers", "norm"), "post_attention_layernorm.weight", "as_is"),
    "gate_kernel": (("layers", "embed", "mlp"), "mlp.gate_proj.weight", "kernel"),
    "up_kernel": (("layers", "embed", "mlp"), "mlp.up_proj.weight", "kernel"),
    "down_kernel": (("layers", "mlp", "embed"), "mlp.down_proj.weight", "kernel"),
}
_BIASES = ("q_bias", "k_bias", "v_bias")


def layer_param_shapes(c: TextConfig) -> dict:
    """Shape of one layer's slice of each stacked parameter (biases only with attention_bias)."""
    d, f, n, k, hd = (c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads,
                      c.resolved_head_dim)
    shapes = {
        "input_norm": (d,), "q_kernel": (d, n, hd), "q_bias": (n, hd), "k_kernel": (d, k, hd),
        "k_bias": (k, hd), "v_kernel": (d, k, hd), "v_bias": (k, hd), "o_kernel": (n, hd, d),
        "post_norm": (d,), "gate_kernel": (d, f), "up_kernel": (d, f), "down_kernel": (f, d),
    }
    if not c.attention_bias:
        shapes = {name: s for name, s in shapes.items() if name not in _BIASES}
    return shapes


class DecoderLayers(nnx.Module):
    """All decoder layers' parameters, stacked on a leading `layers` axis."""

    def __init__(self, config: TextConfig, init: _Init):
        for name, shape in layer_param_shapes(config).items():
            full, names = (config.num_layers,) + shape, _LAYER_PARAMS[name][0]
            if name.endswith("norm"):
                setattr(self, name, init.const(full, names, 1.0))
            elif name in _BIASES:
                setattr(self, name, init.const(full, names, 0.0))
            else:
                setattr(self, name, init.normal(full, names))

    def arrays(self) -> dict:
        base = {name: getattr(self, name)[...] for name in _LAYER_PARAMS if hasattr(self, name)}
        return {**base, **lora_lib.adapter_arrays(self)}


def _response_mask(kv_mask, own_mask, bp: int, p: int, s: int, group: int) -> jax.Array:
    """suffix_attention_mask for `group` response rows of S tokens per prompt row; kv_mask
    [Bp, P] (None: all prompt keys valid), own_mask [Bp·group, S] (None: all valid)."""
    kv_mask = jnp.broadcast_to(jnp.ones((bp, p), bool) if kv_mask is None else kv_mask.astype(bool), (bp, p))
    own = None if own_mask is None else own_mask.astype(bool)
    return suffix_attention_mask(kv_mask, own, s, group)


class Qwen2(nnx.Module):
    """Qwen2 (q/k/v bias) or Llama (no bias) decoder; see the module docstring.

    dtype: compute dtype (activations, K/V, the cache); param_dtype: stored Params (norm
    statistics, RoPE angles and softmax stay f32 either way). attention_impl: None/"xla" or
    "cudnn" (bf16/fp16 on GPU). remat: jax.checkpoint around each scanned layer.
    eager_sharding: None shards Params at creation only when a mesh and axis rules are active.
    lora: adapters on the layers' projections (models/lora.py), matched against HF module
    names under `lora_prefix` ("model." for a text model, "model.language_model." in a VLM).
    """

    def __init__(self, config: TextConfig, *, rngs: nnx.Rngs, dtype="float32",
                 param_dtype="float32", attention_impl: Optional[str] = None, remat: bool = False,
                 eager_sharding: Optional[bool] = None, lora: Optional[lora_lib.LoRAConfig] = None,
                 lora_prefix: str = "model."):
        if config.num_heads % config.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if config.mrope_section is not None:  # refuse a bad section at build time, not at trace time
            mrope_axis_of_frequency(config.mrope_section, config.resolved_head_dim)
        self.config, self.remat, self.attention_impl = config, remat, attention_impl
        self.dtype = jnp.dtype(dtype)
        init = _Init(rngs, jnp.dtype(param_dtype), eager_sharding)
        d, v = config.hidden_size, config.vocab_size
        self.embed_tokens = init.normal((v, d), ("vocab", "embed"))
        self.layers = DecoderLayers(config, init)
        self.lora = lora if lora is not None and lora.enabled else None
        self.lora_prefix = lora_prefix
        if self.lora is not None:
            self.init_adapters(rngs)
        self.final_norm = init.const((d,), ("norm",), 1.0)
        self.lm_head = (None if config.tie_word_embeddings
                        else init.normal((d, v), ("embed", "vocab")))

    def init_adapters(self, rngs: nnx.Rngs) -> None:
        """(Re)creates fresh LoRA adapters (A drawn, B = 0) over the current base kernels, e.g.
        after the base weights were loaded into an abstract model."""
        axes = {n: a for n, (a, _, _) in _LAYER_PARAMS.items()}
        lora_lib.add_adapters(self.layers, axes, self.lora, self.config.num_layers, self.lora_prefix, rngs)

    @classmethod
    def from_config(cls, config, *, rngs: nnx.Rngs, **overrides) -> "Qwen2":
        """Decoder of a family config (its `.text`, dtypes, attention implementation, remat,
        LoRA adapters); overrides: e.g. lora_prefix."""
        kwargs = dict(dtype=config.dtype, param_dtype=config.param_dtype,
                      attention_impl=config.attention_impl, remat=config.remat, lora=lora_lib.lora_of(config))
        kwargs.update(overrides)
        return cls(config.text, rngs=rngs, **kwargs)

    # ----------------------------------------------------------------------------------- pieces
    def embed(self, ids: jax.Array) -> jax.Array:
        """Token ids [B, T] -> embeddings [B, T, D] in the compute dtype."""
        return jnp.take(self.embed_tokens[...], ids, axis=0).astype(self.dtype)

    def lm_head_kernel(self) -> jax.Array:
        """[D, V] in the compute dtype: logits = hidden @ lm_head_kernel() (tied: embedding.T)."""
        kernel = self.embed_tokens[...].T if self.lm_head is None else self.lm_head[...]
        return kernel.astype(self.dtype)

    def _layer(self, p: dict, x, positions, mask, prefix, prompt_len: Optional[int] = None, drop_key=None):
        """One decoder layer; returns (x, (k, v)) with this call's own RoPE'd keys/values.
        `prompt_len`: x is packed [prompt ‖ merged responses] (see `packed`); `drop_key`: this
        layer's adapter-dropout key (lora.layer_keys) or None."""
        c = self.config
        p = {name: w.astype(self.dtype) for name, w in p.items()}
        dropout = None if drop_key is None else (drop_key, float(self.lora.dropout))
        project = lambda name, t, eq: lora_lib.project(p, name, t, eq, dropout)  # noqa: E731
        h = rms_norm(x, p["input_norm"], c.rms_norm_eps)
        q = project("q_kernel", h, "btd,dnh->btnh")
        k = project("k_kernel", h, "btd,dnh->btnh")
        v = project("v_kernel", h, "btd,dnh->btnh")
        if c.attention_bias:
            q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
        q = apply_rope(q, positions, c.rope_theta, c.rope_linear_factor, c.mrope_section)
        k = apply_rope(k, positions, c.rope_theta, c.rope_linear_factor, c.mrope_section)
        if prompt_len is not None:
            # Prompt rows causally among themselves (the fused kernel, no mask); response rows
            # over every key with the block mask. QKV/O/MLP stay one matmul each for both.
            t = prompt_len
            out = jnp.concatenate([attend(q[:, :t], k[:, :t], v[:, :t], None, self.attention_impl),
                                   attend(q[:, t:], k, v, mask, self.attention_impl)], axis=1)
        elif prefix is None:
            out = attend(q, k, v, mask, self.attention_impl)
        else:
            # Merge the `group` suffix rows of each prefix row into one query block (a free
            # reshape with grouped rows), so the prefix K/V is never copied per suffix row.
            pk, pv = prefix
            (b2, s, n, hd), bp = q.shape, pk.shape[0]
            merge = lambda t: t.reshape(bp, (b2 // bp) * s, *t.shape[2:])
            keys = jnp.concatenate([pk.astype(k.dtype), merge(k)], axis=1)
            values = jnp.concatenate([pv.astype(v.dtype), merge(v)], axis=1)
            out = attend(merge(q), keys, values, mask, self.attention_impl).reshape(b2, s, n, hd)
        x = x + project("o_kernel", out, "btnh,nhd->btd")
        h = rms_norm(x, p["post_norm"], c.rms_norm_eps)
        mlp = jax.nn.silu(project("gate_kernel", h, "btd,df->btf")) * project("up_kernel", h, "btd,df->btf")
        return x + project("down_kernel", mlp, "btf,fd->btd"), (k, v)

    def _run(self, x, positions, mask, prefix: Optional[KV], prompt_len: Optional[int] = None):
        """Scans the layers over x; returns (final-normed hidden, own KV stacked [L, ...])."""

        def body(carry, xs):
            p, pre, drop_key = xs
            return self._layer(p, carry, positions, mask, pre, prompt_len, drop_key)

        if self.remat:
            body = jax.checkpoint(body, prevent_cse=False)
        pre = None if prefix is None else (prefix.k, prefix.v)
        keys = lora_lib.layer_keys(self.lora, self.config.num_layers)  # None unless training drops
        x, (k, v) = jax.lax.scan(body, x.astype(self.dtype), (self.layers.arrays(), pre, keys))
        return rms_norm(x, self.final_norm[...], self.config.rms_norm_eps), KV(k, v)

    # ----------------------------------------------------------------------------- entry points
    def __call__(self, embeds, positions=None, mask=None) -> jax.Array:
        """Full causal forward: embeds [B, T, D] -> hidden [B, T, D]."""
        return self.prefix(embeds, positions, mask)[0]

    def prefix(self, embeds, positions=None, mask=None):
        """Causal forward over a prompt -> (hidden [B, P, D], KV with each [L, B, P, K, hd]);
        positions [B, P] or (M-RoPE) [B, 3, P]."""
        b, t = embeds.shape[:2]
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        attn_mask = None if mask is None else self_attention_mask(mask.astype(bool))
        return self._run(embeds, positions, attn_mask, None)

    def suffix(self, embeds, positions, kv_prefix: KV, kv_mask=None, mask=None) -> jax.Array:
        """Tokens that attend to [valid prefix keys ‖ their own row, causally] -> [B2, S, D].

        embeds [B2, S, D], positions [B2, S] or [B2, 3, S] (explicit: they continue each row's
        prompt),
        kv_prefix each [L, Bp, P, K, hd], kv_mask [Bp, P] prefix key validity (None: all valid),
        mask [B2, S] own key validity (None: all valid; right padding needs none).
        Broadcasting rule: B2 = g * Bp with rows grouped, suffix row r uses prefix row r // g
        (g = 1: one prefix per row; Bp = 1: one prefix for all; pairs: [c0, r0, c1, r1, ...]).
        Differentiable w.r.t. kv_prefix: gradients of all g rows add up in the prefix.
        """
        return self._suffix(embeds, positions, kv_prefix, kv_mask, mask)[0]

    def _suffix(self, embeds, positions, kv_prefix: KV, kv_mask, mask):
        b2, s = embeds.shape[:2]
        bp, p = kv_prefix.k.shape[1:3]
        if b2 % bp:
            raise ValueError(f"suffix batch {b2} is not a multiple of the prefix batch {bp}")
        return self._run(embeds, positions, _response_mask(kv_mask, mask, bp, p, s, b2 // bp), kv_prefix)

    def packed(self, prompt_embeds, response_embeds, response_positions, kv_mask=None, mask=None,
               prompt_positions=None):
        """`prefix` + `suffix` in ONE pass: [prompt ‖ its g responses] per prompt row.

        prompt_embeds [Bp, P, D] (right-padded: no prompt mask needed) at prompt_positions
        [Bp, P] or [Bp, 3, P] (None: 0..P-1),
        response_embeds [B2 = g·Bp, S, D] grouped as in `suffix`, response_positions [B2, S]
        (text: broadcast to the prompt table's axes) or [B2, 3, S],
        kv_mask [Bp, P] prompt key validity, mask [B2, S] own key validity. Same values as
        prefix + suffix, but each layer runs one set of matmuls over Bp·(P + g·S) tokens rather
        than a long pass and a short one. -> (hidden_prompt [Bp, P, D], hidden_responses [B2, S, D]).
        """
        bp, t = prompt_embeds.shape[:2]
        b2, s = response_embeds.shape[:2]
        if b2 % bp:
            raise ValueError(f"response batch {b2} is not a multiple of the prompt batch {bp}")
        g = b2 // bp
        merge = lambda a: a.reshape(bp, g * s, *a.shape[2:])  # noqa: E731 - rows are grouped
        x = jnp.concatenate([prompt_embeds.astype(self.dtype), merge(response_embeds).astype(self.dtype)], axis=1)
        if prompt_positions is None:
            prompt_positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (bp, t))
        pp, rp = prompt_positions.astype(jnp.int32), response_positions.astype(jnp.int32)
        if pp.ndim == 3 or rp.ndim == 3:  # M-RoPE tables [B, A, T]: text positions get A axes
            axes = (pp if pp.ndim == 3 else rp).shape[1]
            rows = with_axes(rp, axes).reshape(bp, g, axes, s).transpose(0, 2, 1, 3)
            positions = jnp.concatenate([with_axes(pp, axes), rows.reshape(bp, axes, g * s)], axis=-1)
        else:
            positions = jnp.concatenate([pp, merge(rp)], axis=1)
        hidden, _ = self._run(x, positions, _response_mask(kv_mask, mask, bp, t, s, g), None, prompt_len=t)
        return hidden[:, :t], hidden[:, t:].reshape(b2, s, hidden.shape[-1])

    # --------------------------------------------------------------------------------- KV cache
    def init_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty cache: k/v zeros [L, batch, max_len, K, hd], nothing valid, index 0."""
        c = self.config
        shape = (c.num_layers, batch, max_len, c.num_kv_heads, c.resolved_head_dim)
        zeros = jnp.zeros((batch,), jnp.int32)
        return KVCache(jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype),
                       jnp.zeros((batch, max_len), bool), zeros, zeros)

    def prefill(self, embeds, positions=None, mask=None, *, max_len: int):
        """`prefix` over the prompt, stored in a cache of max_len slots -> (hidden, cache).

        Slot j holds prompt token j; valid = mask; index = last valid slot + 1 (right padding:
        the true length, so decoding overwrites the pad slots); position = 1 + the largest
        valid position (over all axes of a [B, 3, T] table: M-RoPE resumes at the maximum).
        """
        b, t = embeds.shape[:2]
        if max_len < t:
            raise ValueError(f"cache max_len={max_len} is shorter than the prompt ({t})")
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        hidden, kv = self.prefix(embeds, positions, mask)
        pad = [(0, 0), (0, 0), (0, max_len - t), (0, 0), (0, 0)]
        valid = jnp.ones((b, t), bool) if mask is None else mask.astype(bool)
        index = jnp.max(jnp.where(valid, jnp.arange(1, t + 1), 0), axis=1).astype(jnp.int32)
        position = next_position(positions, valid)
        cache = KVCache(jnp.pad(kv.k, pad), jnp.pad(kv.v, pad),
                        jnp.pad(valid, [(0, 0), (0, max_len - t)]), index, position)
        return hidden, cache

    def decode_step(self, embeds, cache: KVCache, positions=None):
        """Runs S new tokens (usually 1) as a suffix over the cache, then writes their K/V at
        each row's `index` -> (hidden [B, S, D], cache). Needs index + S <= max_len.
        positions None: cache.position + 0..S-1 ([B, S]: on every M-RoPE axis); explicit
        [B, 3, S] continue at 1 + their last column's maximum."""
        b, s = embeds.shape[:2]
        if positions is None:
            positions = cache.position[:, None] + jnp.arange(s, dtype=jnp.int32)
        hidden, own = self._suffix(embeds, positions, KV(cache.k, cache.v), cache.valid, None)
        new_cache = KVCache(
            k=write_rows(cache.k, own.k, cache.index),
            v=write_rows(cache.v, own.v, cache.index),
            valid=mark_valid(cache.valid, cache.index, s),
            index=cache.index + s,
            position=next_position(positions[..., -1:], jnp.ones((b, 1), bool)),
        )
        return hidden, new_cache
