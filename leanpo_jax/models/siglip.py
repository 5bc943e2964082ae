"""SigLIP vision tower in Flax NNX (the LLaVA-OneVision / LLaVA-Video feature extractor).

    y = Block_L(...Block_1(PatchEmbed(x) + pos)),
    Block(h) = h' + MLP(LN2(h')),  h' = h + Attn(LN1(h))

Pre-LN blocks, non-causal attention with q/k/v/out biases, MLP fc1 -> tanh-GELU -> fc2. The tower
returns the LAST BLOCK's output: `post_layernorm` is kept as a parameter (HF checkpoints carry
it and a load/save round trip must be exact) but is never applied, because LLaVA feeds the
26th layer's output before post-LN to the projector (models.md 1.4). Build `num_layers=26`.

Input pixels are channels-last `[..., H, W, C]`, already normalised to [-1, 1]; output is
`[..., num_patches, D]`, patches in row-major (h, w) order like HF's `flatten(2)`.

Parameter tree (L = num_layers, p = patch, C = channels, D = hidden, H = heads, hd = D // H,
M = intermediate, P = num_patches). Logical axes: emb = vision_embed, hds = vision_heads,
hdd = vision_head_dim, mlp = vision_mlp, lay = layers, - = None (replicated).

  path                           shape          logical axes
  patch_embed.kernel             [p, p, C, D]   (-, -, -, emb)
  patch_embed.bias               [D]            (emb)
  position_embedding             [P, D]         (-, emb)
  layers.layer_norm{1,2}.scale   [L, D]         (lay, emb)
  layers.layer_norm{1,2}.bias    [L, D]         (lay, emb)
  layers.{q,k,v}_proj.kernel     [L, D, H, hd]  (lay, emb, hds, hdd)
  layers.{q,k,v}_proj.bias       [L, H, hd]     (lay, hds, hdd)
  layers.out_proj.kernel         [L, H, hd, D]  (lay, hds, hdd, emb)
  layers.out_proj.bias           [L, D]         (lay, emb)
  layers.fc1.kernel / .bias      [L, D, M] / [L, M]   (lay, emb, mlp) / (lay, mlp)
  layers.fc2.kernel / .bias      [L, M, D] / [L, D]   (lay, mlp, emb) / (lay, emb)
  post_layernorm.{scale,bias}    [D]            (emb)         kept, never applied

HF tensors (names after `prefix`: "vision_model." in hub checkpoints, "" for transformers 5's
own SiglipVisionModel state dict, "vision_tower.vision_model." etc. inside LLaVA files). Per
layer i the HF tensor is slice [i] of the stacked parameter; torch Linear weight [out, in] ->
kernel [in, out]:

  embeddings.patch_embedding.weight [D, C, p, p]   -> transpose(2, 3, 1, 0) = [p, p, C, D]
  embeddings.patch_embedding.bias, embeddings.position_embedding.weight    -> as is
  encoder.layers.{i}.layer_norm{1,2}.{weight,bias}                           -> scale / bias
  encoder.layers.{i}.self_attn.{q,k,v}_proj.weight [H*hd, D] -> .T.reshape(D, H, hd)
  encoder.layers.{i}.self_attn.{q,k,v}_proj.bias [H*hd]      -> reshape(H, hd)
  encoder.layers.{i}.self_attn.out_proj.weight [D, H*hd]     -> .T.reshape(H, hd, D)
  encoder.layers.{i}.self_attn.out_proj.bias                 -> as is
  encoder.layers.{i}.mlp.fc{1,2}.weight / .bias              -> .T / as is
  post_layernorm.{weight,bias}                               -> scale / bias

Logical axis names used here: layers, vision_embed, vision_heads, vision_head_dim, vision_mlp
(None = replicated). `siglip_hf_table` is the machine-readable form of this table; checkpoint
layers with index >= L (e.g. SigLIP's 27th) and the attention-pool `head` are not part of it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.core import spmd as flax_spmd

from leanpo_jax.models.config import VideoLLMConfig

# ------------------------------------------------------------------------------------------
# Parameter helpers (shared with connector.py)
# ------------------------------------------------------------------------------------------


def logical_param(value: jax.Array, names: tuple) -> nnx.Param:
    """An `nnx.Param` annotated with logical axis `names` (one per dim; None = replicated).

    Flax's eager sharding needs a mesh and rules; without both (single-device tests, plain
    CPU builds) the names are kept as metadata only and `nnx.get_partition_spec` /
    `nnx.get_named_sharding` under `nnx.logical_axis_rules` map them later.
    """
    if len(names) != value.ndim:
        raise ValueError(f"{len(names)} axis names {names} for a {value.ndim}-d parameter")
    eager = (
        nnx.using_eager_sharding()
        and not jax.sharding.get_abstract_mesh().empty
        and bool(flax_spmd.get_logical_axis_rules())
    )
    return nnx.Param(value, out_sharding=tuple(names), eager_sharding=eager)


def _normal(rngs: nnx.Rngs, shape, std: float, dtype) -> jax.Array:
    return (jax.random.normal(rngs.params(), shape, jnp.float32) * std).astype(dtype)


class Dense(nnx.Module):
    """A kernel/bias parameter pair (no forward: callers contract it with einsum / matmul).
    Kernel init: normal with std fan_in**-0.5; bias init: zeros."""

    def __init__(self, kernel_shape, kernel_axes, bias_shape, bias_axes, *, fan_in: int,
                 param_dtype, rngs: nnx.Rngs):
        self.kernel = logical_param(_normal(rngs, kernel_shape, fan_in**-0.5, param_dtype),
                                    kernel_axes)
        self.bias = logical_param(jnp.zeros(bias_shape, param_dtype), bias_axes)


class LayerNormParams(nnx.Module):
    """LayerNorm scale (init 1) and bias (init 0)."""

    def __init__(self, shape, axes, *, param_dtype):
        self.scale = logical_param(jnp.ones(shape, param_dtype), axes)
        self.bias = logical_param(jnp.zeros(shape, param_dtype), axes)


def layer_norm(x: jax.Array, scale, bias, eps: float) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * scale + bias, statistics in float32; returns x.dtype."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


# ------------------------------------------------------------------------------------------
# The tower
# ------------------------------------------------------------------------------------------


class SiglipEncoderLayers(nnx.Module):
    """All encoder blocks, every parameter stacked on a leading `layers` axis (see module doc)."""

    def __init__(self, config: VideoLLMConfig, *, rngs: nnx.Rngs):
        v = config.vision
        L, D, H, hd, M = v.num_layers, v.hidden_size, v.num_heads, v.head_dim, v.intermediate_size
        if H * hd != D:
            raise ValueError(f"hidden_size {D} is not divisible by num_heads {H}")
        pd = jnp.dtype(config.param_dtype)
        dense = functools.partial(Dense, param_dtype=pd, rngs=rngs)
        ln_axes = ("layers", "vision_embed")
        self.layer_norm1 = LayerNormParams((L, D), ln_axes, param_dtype=pd)
        qkv_axes = ("layers", "vision_embed", "vision_heads", "vision_head_dim")
        qkv_bias_axes = ("layers", "vision_heads", "vision_head_dim")
        self.q_proj = dense((L, D, H, hd), qkv_axes, (L, H, hd), qkv_bias_axes, fan_in=D)
        self.k_proj = dense((L, D, H, hd), qkv_axes, (L, H, hd), qkv_bias_axes, fan_in=D)
        self.v_proj = dense((L, D, H, hd), qkv_axes, (L, H, hd), qkv_bias_axes, fan_in=D)
        self.out_proj = dense((L, H, hd, D), ("layers", "vision_heads", "vision_head_dim",
                                              "vision_embed"), (L, D), ln_axes, fan_in=D)
        self.layer_norm2 = LayerNormParams((L, D), ln_axes, param_dtype=pd)
        self.fc1 = dense((L, D, M), ("layers", "vision_embed", "vision_mlp"), (L, M),
                         ("layers", "vision_mlp"), fan_in=D)
        self.fc2 = dense((L, M, D), ("layers", "vision_mlp", "vision_embed"), (L, D), ln_axes,
                         fan_in=M)

    def stacked(self) -> dict:
        """The parameters as a flat dict of `[L, ...]` arrays (what `lax.scan` iterates over)."""
        out = {}
        for name in ("layer_norm1", "layer_norm2"):
            mod = getattr(self, name)
            out[f"{name}.scale"], out[f"{name}.bias"] = mod.scale[...], mod.bias[...]
        for name in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
            mod = getattr(self, name)
            out[f"{name}.kernel"], out[f"{name}.bias"] = mod.kernel[...], mod.bias[...]
        return out


def encoder_layer(x: jax.Array, p: dict, *, eps: float, implementation: Optional[str]) -> jax.Array:
    """One pre-LN block on x [B, T, D] with one layer's parameters `p` (names as `stacked()`)."""
    dt = x.dtype
    w = {k: v if "layer_norm" in k else v.astype(dt) for k, v in p.items()}
    h = layer_norm(x, w["layer_norm1.scale"], w["layer_norm1.bias"], eps)
    q = jnp.einsum("btd,dnh->btnh", h, w["q_proj.kernel"]) + w["q_proj.bias"]
    k = jnp.einsum("btd,dnh->btnh", h, w["k_proj.kernel"]) + w["k_proj.bias"]
    v = jnp.einsum("btd,dnh->btnh", h, w["v_proj.kernel"]) + w["v_proj.bias"]
    # Non-causal, scale head_dim**-0.5 (the default); softmax runs in f32 inside the XLA path.
    a = jax.nn.dot_product_attention(q, k, v, implementation=implementation)
    x = x + jnp.einsum("btnh,nhd->btd", a, w["out_proj.kernel"]) + w["out_proj.bias"]
    h = layer_norm(x, w["layer_norm2.scale"], w["layer_norm2.bias"], eps)
    # SigLIP's MLP uses gelu_pytorch_tanh, i.e. the tanh approximation (unlike the projector).
    h = jax.nn.gelu(h @ w["fc1.kernel"] + w["fc1.bias"], approximate=True)
    return x + h @ w["fc2.kernel"] + w["fc2.bias"]


class SiglipVisionTower(nnx.Module):
    """SigLIP ViT: pixels [..., H, W, C] -> last block's hidden states [..., P, D] (no post-LN)."""

    def __init__(self, config: VideoLLMConfig, *, rngs: nnx.Rngs):
        v = config.vision
        self.config = config
        pd = jnp.dtype(config.param_dtype)
        p, C, D = v.patch_size, v.num_channels, v.hidden_size
        self.patch_embed = Dense((p, p, C, D), (None, None, None, "vision_embed"), (D,),
                                 ("vision_embed",), fan_in=p * p * C, param_dtype=pd, rngs=rngs)
        self.position_embedding = logical_param(
            _normal(rngs, (v.num_patches, D), D**-0.5, pd), (None, "vision_embed"))
        self.layers = SiglipEncoderLayers(config, rngs=rngs)
        self.post_layernorm = LayerNormParams((D,), ("vision_embed",), param_dtype=pd)

    def embed(self, pixels: jax.Array) -> jax.Array:
        """Patchify-then-matmul (== stride-p conv) + position embedding: [N,H,W,C] -> [N,P,D].

        Like torch's padding="valid" conv, trailing pixels that do not fill a whole patch are
        dropped: so400m has 384 = 27 * 14 + 6, so only the first 378 rows/columns are seen.
        """
        v = self.config.vision
        dt = jnp.dtype(self.config.dtype)
        n, g, p = pixels.shape[0], v.grid_size, v.patch_size
        if pixels.shape[1:] != (v.image_size, v.image_size, v.num_channels):
            raise ValueError(f"pixels {pixels.shape} do not match vision config {v}")
        x = pixels[:, : g * p, : g * p].astype(dt).reshape(n, g, p, g, p, v.num_channels)
        x = jnp.einsum("nhpwqc,pqcd->nhwd", x, self.patch_embed.kernel[...].astype(dt))
        x = x.reshape(n, g * g, v.hidden_size) + self.patch_embed.bias[...].astype(dt)
        return x + self.position_embedding[...].astype(dt)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        lead = pixels.shape[:-3]
        x = self.embed(pixels.reshape((-1,) + pixels.shape[-3:]))
        block = functools.partial(encoder_layer, eps=self.config.vision.layer_norm_eps,
                                  implementation=self.config.attention_impl)
        if self.config.remat:
            # Per-layer rematerialisation: only each block's input is saved for the backward.
            block = jax.checkpoint(block, prevent_cse=False)
        x, _ = jax.lax.scan(lambda h, p: (block(h, p), None), x, self.layers.stacked())
        return x.reshape(lead + x.shape[1:])


# ------------------------------------------------------------------------------------------
# HF state dict <-> parameter tree
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HFTensor:
    """One HF tensor: its key, the Param path, the index on the `layers` axis (None: not
    stacked) and the two array transforms (HF layout <-> our layout, one layer's slice)."""

    hf_key: str
    path: tuple
    layer: Optional[int]
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def _same(a):
    return a


def _t(a):
    return a.T


def linear_entries(hf_prefix: str, path: tuple, layer=None, *, out_shape=None, in_shape=None):
    """Entries for a torch Linear `weight [out, in]` / `bias [out]` pair: kernel = weight.T,
    optionally with the in or out dim split (e.g. [D, H*hd] -> [D, H, hd])."""
    def w_to(a):
        k = a.T
        if out_shape is not None:
            k = k.reshape(k.shape[:1] + tuple(out_shape))
        if in_shape is not None:
            k = k.reshape(tuple(in_shape) + k.shape[-1:])
        return k

    def w_from(k):
        k = k.reshape(-1, k.shape[-1]) if in_shape is not None else k
        k = k.reshape(k.shape[0], -1) if out_shape is not None else k
        return k.T

    def b_to(a):
        return a.reshape(out_shape) if out_shape is not None else a

    def b_from(b):
        return b.reshape(-1)

    return [HFTensor(hf_prefix + ".weight", path + ("kernel",), layer, w_to, w_from),
            HFTensor(hf_prefix + ".bias", path + ("bias",), layer, b_to, b_from)]


def _norm_entries(hf_prefix: str, path: tuple, layer=None):
    return [HFTensor(hf_prefix + ".weight", path + ("scale",), layer, _same, _same),
            HFTensor(hf_prefix + ".bias", path + ("bias",), layer, _same, _same)]


def siglip_hf_table(config: VideoLLMConfig, prefix: str = "vision_model.") -> list:
    """Every HF tensor the tower holds, in checkpoint order (see the module docstring)."""
    v = config.vision
    H, hd = v.num_heads, v.head_dim
    e = prefix + "embeddings."
    table = [
        HFTensor(e + "patch_embedding.weight", ("patch_embed", "kernel"), None,
                 lambda a: a.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1)),
        HFTensor(e + "patch_embedding.bias", ("patch_embed", "bias"), None, _same, _same),
        HFTensor(e + "position_embedding.weight", ("position_embedding",), None, _same, _same),
    ]
    for i in range(v.num_layers):
        hl = f"{prefix}encoder.layers.{i}."
        table += _norm_entries(hl + "layer_norm1", ("layers", "layer_norm1"), i)
        for name in ("q_proj", "k_proj", "v_proj"):
            table += linear_entries(hl + "self_attn." + name, ("layers", name), i,
                                    out_shape=(H, hd))
        table += linear_entries(hl + "self_attn.out_proj", ("layers", "out_proj"), i,
                                in_shape=(H, hd))
        table += _norm_entries(hl + "layer_norm2", ("layers", "layer_norm2"), i)
        table += linear_entries(hl + "mlp.fc1", ("layers", "fc1"), i)
        table += linear_entries(hl + "mlp.fc2", ("layers", "fc2"), i)
    table += _norm_entries(prefix + "post_layernorm", ("post_layernorm",))
    return table


def _get_param(module: nnx.Module, path: tuple) -> nnx.Variable:
    obj = module
    for name in path:
        obj = getattr(obj, name)
    return obj


def load_hf_tensors(module: nnx.Module, table: list, state_dict) -> None:
    """Writes `state_dict[entry.hf_key]` (numpy-like) into the module for every table entry.

    Values are cast to each Param's dtype and keep its current sharding. Keys of the state
    dict that the table does not name are ignored (e.g. a 27th SigLIP layer or the head).
    """
    missing = [e.hf_key for e in table if e.hf_key not in state_dict]
    if missing:
        raise KeyError(f"{len(missing)} tensors missing from the state dict, e.g. {missing[:3]}")
    stacks: dict = {}
    for e in table:
        arr = np.asarray(e.to_flax(np.asarray(state_dict[e.hf_key])))
        if e.layer is None:
            _assign(module, e.path, arr)
        else:
            stacks.setdefault(e.path, {})[e.layer] = arr
    for path, per_layer in stacks.items():
        _assign(module, path, np.stack([per_layer[i] for i in sorted(per_layer)]))


def _assign(module: nnx.Module, path: tuple, arr: np.ndarray) -> None:
    var = _get_param(module, path)
    old = var.get_value()
    if tuple(arr.shape) != tuple(old.shape):
        raise ValueError(f"{'.'.join(path)}: checkpoint shape {arr.shape} != {old.shape}")
    new = jnp.asarray(arr, dtype=old.dtype)
    if isinstance(old, jax.Array) and not isinstance(old, jax.core.Tracer):
        new = jax.device_put(new, old.sharding)
    var.set_value(new)


def export_hf_tensors(module: nnx.Module, table: list, dtype=None) -> dict:
    """The inverse of `load_hf_tensors`: {hf_key: contiguous numpy array in HF layout}."""
    cache: dict = {}
    out = {}
    for e in table:
        if e.path not in cache:
            cache[e.path] = np.asarray(jax.device_get(_get_param(module, e.path).get_value()))
        arr = cache[e.path] if e.layer is None else cache[e.path][e.layer]
        arr = e.to_hf(arr)
        out[e.hf_key] = np.ascontiguousarray(arr if dtype is None else arr.astype(dtype))
    return out


def load_siglip_state_dict(tower: SiglipVisionTower, state_dict,
                           prefix: str = "vision_model.") -> None:
    """Loads a transformers SiglipVisionModel-style state dict (numpy values) into `tower`."""
    load_hf_tensors(tower, siglip_hf_table(tower.config, prefix), state_dict)


def export_siglip_state_dict(tower: SiglipVisionTower, prefix: str = "vision_model.",
                             dtype=None) -> dict:
    """Exports `tower` as a SiglipVisionModel-style state dict (post_layernorm included)."""
    return export_hf_tensors(tower, siglip_hf_table(tower.config, prefix), dtype)


def num_params(module: nnx.Module) -> int:
    """Total parameter count of an NNX module (abstract or concrete)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
