"""The Qwen2-VL / Qwen2.5-VL vision tower in Flax NNX: frames -> LLM-width video tokens.

    x = patchify(frames) @ W_patch;   x = Block_L(...Block_1(x));   out = Merger(x)
    Block(x) = x' + MLP(N2(x')),  x' = x + proj(Attn(RoPE2d(q), RoPE2d(k), v of qkv(N1(x))))
    Merger(x) = fc2(GELU_erf(fc1(view4(N_q(x)))))   (4 consecutive rows = one 2x2 merge unit)

Version 2: N = LayerNorm (eps 1e-6), MLP = fc2(quick_gelu(fc1 x)) (hidden * mlp_ratio).
Version 2.5: N = RMSNorm (eps 1e-6, weight only), MLP = down(silu(gate x) * up x), all with
biases; attention within padded windows (vision_layout.py) except in `fullatt_block_indexes`.
Attention is non-causal and never crosses a temporal slice (2 frames): slices are a batch axis.
Frames [B, F, H, W, C] are normalised, channels-last, H and W multiples of 28 (the run's bucket:
config.video_size or one of data.video_buckets; each size compiles once); the output
[B, t * h/2 * w/2, out_hidden_size] is in the order of transformers' get_video_features (t
outermost, merge units row-major), N == num_video_tokens(config, F, (H, W)).

Parameter tree (L depth, D hidden, H heads, hd head dim, M mlp, P = C*2*14*14, O out) and logical
axes (lay = layers, emb = vision_embed, hds = vision_heads, hdd = vision_head_dim, mlp = vision_mlp):
  patch_embed                      [P, D]             (-, emb)
  layers.norm{1,2}.scale (/.bias)  [L, D]             (lay, emb)     bias: version 2 only
  layers.qkv.kernel / .bias        [L, D, 3, H, hd] / [L, 3, H, hd]  (lay, emb, -, hds, hdd)
  layers.proj.kernel / .bias       [L, H, hd, D] / [L, D]
  layers.fc1 / fc2                 [L, D, M] / [L, M, D] (+ biases)  version 2
  layers.gate_proj / up_proj / down_proj  [L, D, M] / [L, D, M] / [L, M, D] (+ biases)  2.5
  merger.ln_q.scale (/.bias)       [D]                (emb)
  merger.mlp_0.kernel / .bias      [4D, 4D] / [4D]    (emb, mlp) / (mlp)
  merger.mlp_2.kernel / .bias      [4D, O] / [O]      (mlp, embed) / (embed)
HF tensors (`qwen_vision_hf_table`; prefix "visual." in hub files, "model.visual." in
transformers 5's in-memory names, "" for the visual module's own state dict):
  patch_embed.proj.weight [D, C, 2, 14, 14] -> reshape(D, P).T
  blocks.{i}.norm{1,2}.weight (.bias), attn.qkv [3*H*hd, D] -> .T.reshape(D, 3, H, hd),
  attn.proj, mlp.{fc1,fc2 | gate_proj,up_proj,down_proj}, merger.ln_q, merger.mlp.{0,2}.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax.models.attention import attend
from leanpo_jax.models.hf_tables import (HFTensor, export_hf_tensors, identity, linear_entries,
                                         load_hf_tensors, norm_entries)
from leanpo_jax.models.params import Dense, LayerNormParams, logical_param, normal_init
from leanpo_jax.models.qwen2 import rms_norm
from leanpo_jax.models.qwen_vl.config import QwenVisionConfig, QwenVLConfig, num_video_tokens
from leanpo_jax.models.qwen_vl.vision_layout import (SliceLayout, apply_vision_rope, patchify,
                                                     rope_tables, slice_layout)
from leanpo_jax.models.vision_blocks import ACTIVATIONS, layer_norm

_MLP = {"2": ("fc1", "fc2"), "2.5": ("gate_proj", "up_proj", "down_proj")}


class RMSNormParams(nnx.Module):
    """RMSNorm weight (init 1), stored as `scale` like LayerNormParams."""

    def __init__(self, shape, axes, *, param_dtype):
        self.scale = logical_param(jnp.ones(shape, param_dtype), axes)


def _norm_params(v: QwenVisionConfig, shape, axes, pd):
    cls = LayerNormParams if v.version == "2" else RMSNormParams
    return cls(shape, axes, param_dtype=pd)


def _norm(x: jax.Array, p: dict, name: str, v: QwenVisionConfig) -> jax.Array:
    if v.version == "2":
        return layer_norm(x, p[f"{name}.scale"], p[f"{name}.bias"], v.norm_eps)
    return rms_norm(x, p[f"{name}.scale"], v.norm_eps)


def check_vision_config(v: QwenVisionConfig) -> None:
    """Raises naming the field when the 2-D RoPE or the heads cannot be laid out."""
    if v.hidden_size % v.num_heads:
        raise ValueError(f"vision.hidden_size={v.hidden_size} is not divisible by "
                         f"vision.num_heads={v.num_heads}")
    if v.head_dim % 4:
        raise ValueError(f"vision head_dim={v.head_dim} must be a multiple of 4 (2-D RoPE: a quarter "
                         "of it per axis, duplicated); change vision.hidden_size or vision.num_heads")


class QwenVisionLayers(nnx.Module):
    """Every block's parameters, stacked on a leading `layers` axis (module docstring)."""

    def __init__(self, v: QwenVisionConfig, *, param_dtype, rngs: nnx.Rngs):
        L, D, H, hd, M = v.depth, v.hidden_size, v.num_heads, v.head_dim, v.mlp_size
        pd = jnp.dtype(param_dtype)
        dense = functools.partial(Dense, param_dtype=pd, rngs=rngs)
        emb = ("layers", "vision_embed")
        self.norm1 = _norm_params(v, (L, D), emb, pd)
        self.norm2 = _norm_params(v, (L, D), emb, pd)
        heads = ("vision_heads", "vision_head_dim")
        self.qkv = dense((L, D, 3, H, hd), ("layers", "vision_embed", None) + heads,
                         (L, 3, H, hd), ("layers", None) + heads, fan_in=D)
        self.proj = dense((L, H, hd, D), ("layers", "vision_heads", "vision_head_dim", "vision_embed"),
                          (L, D), emb, fan_in=D)
        up = dict(kernel_shape=(L, D, M), kernel_axes=("layers", "vision_embed", "vision_mlp"),
                  bias_shape=(L, M), bias_axes=("layers", "vision_mlp"), fan_in=D)
        down = dict(kernel_shape=(L, M, D), kernel_axes=("layers", "vision_mlp", "vision_embed"),
                    bias_shape=(L, D), bias_axes=emb, fan_in=M)
        *ups, last = _MLP[v.version]
        for name in ups:
            setattr(self, name, dense(**up))
        setattr(self, last, dense(**down))
        self._names = ("norm1", "norm2", "qkv", "proj") + _MLP[v.version]

    def stacked(self) -> dict:
        """{"<module>.<leaf>": [L, ...] array} (what `lax.scan` iterates over)."""
        out = {}
        for name in self._names:
            mod = getattr(self, name)
            for leaf in ("scale", "kernel", "bias"):
                if hasattr(mod, leaf):
                    out[f"{name}.{leaf}"] = getattr(mod, leaf)[...]
        return out


def window_attention(q, k, v, layout: SliceLayout, implementation: Optional[str]) -> jax.Array:
    """Attention within each padded window of every slice: q/k/v [N, S, H, hd] are gathered to
    [N * nW, Wmax, H, hd] (ragged windows: padding keys cut by key lengths), attended, gathered back."""
    n = q.shape[0]
    nw, wmax = layout.window_index.shape
    flat = layout.window_index.reshape(-1)

    def windows(x):
        return x[:, flat].reshape((n * nw, wmax) + x.shape[2:])

    lengths = jnp.asarray(layout.window_lengths(n)) if layout.ragged else None
    out = attend(windows(q), windows(k), windows(v), None, implementation, causal=False, kv_lengths=lengths)
    return out.reshape((n, nw * wmax) + out.shape[2:])[:, layout.window_inverse]


def vision_block(x: jax.Array, p: dict, full, *, v: QwenVisionConfig, layout: SliceLayout, rope,
                 implementation: Optional[str]) -> jax.Array:
    """One block on x [N, S, D] (N = batch * temporal slices). `full`: a traced bool, full-slice
    attention (True) or window attention (version 2.5), or None for always full."""
    dt = x.dtype
    w = {key: val if key.startswith("norm") else val.astype(dt) for key, val in p.items()}
    h = _norm(x, w, "norm1", v)
    q, k, val = jnp.einsum("nsd,dcih->cnsih", h, w["qkv.kernel"]) + w["qkv.bias"][:, None, None]
    q, k = apply_vision_rope(q, *rope), apply_vision_rope(k, *rope)

    def full_attention(q, k, val):
        return attend(q, k, val, None, implementation, causal=False)

    if full is None:
        a = full_attention(q, k, val)
    else:
        a = jax.lax.cond(full, full_attention,
                         functools.partial(window_attention, layout=layout, implementation=implementation),
                         q, k, val)
    x = x + jnp.einsum("nsih,ihd->nsd", a, w["proj.kernel"]) + w["proj.bias"]
    h = _norm(x, w, "norm2", v)
    if v.version == "2":
        h = ACTIVATIONS["quick_gelu"](h @ w["fc1.kernel"] + w["fc1.bias"])
        return x + h @ w["fc2.kernel"] + w["fc2.bias"]
    gate = jax.nn.silu(h @ w["gate_proj.kernel"] + w["gate_proj.bias"])
    h = gate * (h @ w["up_proj.kernel"] + w["up_proj.bias"])
    return x + h @ w["down_proj.kernel"] + w["down_proj.bias"]


def full_attention_flags(v: QwenVisionConfig) -> Optional[np.ndarray]:
    """[depth] bool, True where a block attends to its whole slice; None when every block does
    (version 2, or a 2.5 config listing every block), so no per-layer branch is traced."""
    if v.version == "2":
        return None
    bad = [i for i in v.fullatt_block_indexes if not 0 <= i < v.depth]
    if bad:
        raise ValueError(f"vision.fullatt_block_indexes {bad} outside [0, depth={v.depth})")
    flags = np.isin(np.arange(v.depth), v.fullatt_block_indexes)
    return None if flags.all() else flags


class QwenMerger(nnx.Module):
    """ln_q -> 4 rows as one -> Linear(4D, 4D) -> exact GELU -> Linear(4D, O)."""

    def __init__(self, v: QwenVisionConfig, *, param_dtype, rngs: nnx.Rngs):
        pd = jnp.dtype(param_dtype)
        wide, out = v.hidden_size * v.merge_unit, v.out_hidden_size
        self.ln_q = _norm_params(v, (v.hidden_size,), ("vision_embed",), pd)
        self.mlp_0 = Dense((wide, wide), ("vision_embed", "mlp"), (wide,), ("mlp",), fan_in=wide,
                           param_dtype=pd, rngs=rngs)
        self.mlp_2 = Dense((wide, out), ("mlp", "embed"), (out,), ("embed",), fan_in=wide,
                           param_dtype=pd, rngs=rngs)

    def __call__(self, x: jax.Array, v: QwenVisionConfig) -> jax.Array:
        """[N, S, D] -> [N, S / 4, O]."""
        dt = x.dtype
        p = {"ln_q.scale": self.ln_q.scale[...]}
        if v.version == "2":
            p["ln_q.bias"] = self.ln_q.bias[...]
        x = _norm(x, p, "ln_q", v)
        x = x.reshape(x.shape[0], -1, v.hidden_size * v.merge_unit)
        x = jax.nn.gelu(x @ self.mlp_0.kernel[...].astype(dt) + self.mlp_0.bias[...].astype(dt),
                        approximate=False)
        return x @ self.mlp_2.kernel[...].astype(dt) + self.mlp_2.bias[...].astype(dt)


class QwenVisionTower(nnx.Module):
    """Frames [B, F, H, W, C] -> video tokens [B, num_video_tokens(config, F), out_hidden_size]."""

    def __init__(self, config: QwenVLConfig, *, rngs: nnx.Rngs):
        v = config.vision
        check_vision_config(v)
        full_attention_flags(v)  # validates fullatt_block_indexes at build time
        self.config = config
        pd = jnp.dtype(config.param_dtype)
        kernel = normal_init(rngs, (v.patch_dim, v.hidden_size), v.patch_dim**-0.5, pd)
        self.patch_embed = logical_param(kernel, (None, "vision_embed"))
        self.layers = QwenVisionLayers(v, param_dtype=pd, rngs=rngs)
        self.merger = QwenMerger(v, param_dtype=pd, rngs=rngs)

    def __call__(self, frames: jax.Array) -> jax.Array:
        cfg, v = self.config, self.config.vision
        dt = jnp.dtype(cfg.dtype)
        b, f, hh, ww, c = frames.shape
        if c != v.in_channels:
            raise ValueError(f"frames {frames.shape}: expected [B, F, H, W, {v.in_channels}] (vision.in_channels)")
        layout = slice_layout(v, hh, ww)  # any bucket: H and W multiples of 28 (else a ValueError)
        rope = rope_tables(v, layout)
        x = patchify(frames.astype(dt), v) @ self.patch_embed[...].astype(dt)
        x = x.reshape(-1, layout.positions.shape[0], v.hidden_size)  # [B * t, S, D]
        flags = full_attention_flags(v)
        block = functools.partial(vision_block, v=v, layout=layout, rope=rope,
                                  implementation=cfg.attention_impl)
        if cfg.remat:
            block = jax.checkpoint(block, prevent_cse=False)
        params = self.layers.stacked()
        if flags is None:
            x, _ = jax.lax.scan(lambda h, p: (block(h, p, None), None), x, params)
        else:
            x, _ = jax.lax.scan(lambda h, pf: (block(h, *pf), None), x, (params, jnp.asarray(flags)))
        out = self.merger(x, v).reshape(b, -1, v.out_hidden_size)
        assert out.shape[1] == num_video_tokens(cfg, f, (hh, ww)), (out.shape, num_video_tokens(cfg, f, (hh, ww)))
        return out


# ---------------------------------------------------------------------------------- HF tensors
def _vision_norm_entries(v: QwenVisionConfig, hf_prefix: str, path: tuple, layer=None) -> list:
    if v.version == "2":
        return norm_entries(hf_prefix, path, layer)
    return [HFTensor(hf_prefix + ".weight", path + ("scale",), layer, identity, identity)]


def qwen_vision_hf_table(config: QwenVLConfig, prefix: str = "visual.") -> list:
    """HFTensor entries of every tower tensor (module docstring), in checkpoint order."""
    v = config.vision
    D, H, hd = v.hidden_size, v.num_heads, v.head_dim
    conv = (D, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    table = [HFTensor(prefix + "patch_embed.proj.weight", ("patch_embed",), None,
                      lambda a: a.reshape(D, -1).T, lambda k: k.T.reshape(conv))]
    for i in range(v.depth):
        hb, path = f"{prefix}blocks.{i}.", ("layers",)
        table += _vision_norm_entries(v, hb + "norm1", path + ("norm1",), i)
        table += _vision_norm_entries(v, hb + "norm2", path + ("norm2",), i)
        table += linear_entries(hb + "attn.qkv", path + ("qkv",), i, out_shape=(3, H, hd))
        table += linear_entries(hb + "attn.proj", path + ("proj",), i, in_shape=(H, hd))
        for name in _MLP[v.version]:
            table += linear_entries(hb + "mlp." + name, path + (name,), i)
    table += _vision_norm_entries(v, prefix + "merger.ln_q", ("merger", "ln_q"))
    table += linear_entries(prefix + "merger.mlp.0", ("merger", "mlp_0"))
    table += linear_entries(prefix + "merger.mlp.2", ("merger", "mlp_2"))
    return table


def load_vision_state_dict(tower: QwenVisionTower, state_dict, prefix: str = "visual.") -> None:
    """Fills the tower from an HF state dict (numpy-like values) through `qwen_vision_hf_table`."""
    load_hf_tensors(tower, qwen_vision_hf_table(tower.config, prefix), state_dict)


def export_vision_state_dict(tower: QwenVisionTower, prefix: str = "visual.", dtype=None) -> dict:
    """The inverse of `load_vision_state_dict`: {HF key: numpy array in HF layout}."""
    return export_hf_tensors(tower, qwen_vision_hf_table(tower.config, prefix), dtype)
