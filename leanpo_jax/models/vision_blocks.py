"""Pre-LN ViT encoder blocks shared by the vision towers (SigLIP, CLIP): stacked params, one scan.

    Block(h) = h' + fc2(act(fc1(LN2(h')))),  h' = h + out(Attn(q, k, v of LN1(h)))

Non-causal attention with q/k/v/out biases; `activation` is "gelu_tanh" (SigLIP's
gelu_pytorch_tanh) or "quick_gelu" (CLIP: x·σ(1.702x)). Every parameter is stacked on a
leading `layers` axis and the blocks run under `lax.scan` (one compiled body for all layers).

Parameter tree (L layers, D hidden, H heads, hd = D // H, M mlp) and logical axes
(lay = layers, emb = vision_embed, hds = vision_heads, hdd = vision_head_dim, mlp = vision_mlp):
  layer_norm{1,2}.scale / .bias   [L, D]            (lay, emb)
  {q,k,v}_proj.kernel / .bias     [L, D, H, hd] / [L, H, hd]
  out_proj.kernel / .bias         [L, H, hd, D] / [L, D]
  fc1.kernel / .bias              [L, D, M] / [L, M];   fc2.kernel / .bias  [L, M, D] / [L, D]
HF tensors of layer i (`vit_layers_hf_table`): {prefix}encoder.layers.{i}.{layer_norm1,
self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}.{weight,bias}; torch Linear weights
[out, in] are transposed, the head axis split out.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from leanpo_jax.models.attention import attend
from leanpo_jax.models.hf_tables import linear_entries, norm_entries
from leanpo_jax.models.params import Dense, LayerNormParams

ACTIVATIONS = {
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}
_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def layer_norm(x: jax.Array, scale, bias, eps: float) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * scale + bias, statistics in float32; returns x.dtype."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


class ViTLayers(nnx.Module):
    """All encoder blocks' parameters, stacked on a leading `layers` axis (module docstring)."""

    def __init__(self, num_layers: int, hidden: int, heads: int, mlp: int, *, param_dtype, rngs: nnx.Rngs):
        L, D, H, M = num_layers, hidden, heads, mlp
        if D % H:
            raise ValueError(f"vision hidden_size {D} is not divisible by num_heads {H}")
        hd = D // H
        dense = functools.partial(Dense, param_dtype=jnp.dtype(param_dtype), rngs=rngs)
        ln_axes = ("layers", "vision_embed")
        self.layer_norm1 = LayerNormParams((L, D), ln_axes, param_dtype=jnp.dtype(param_dtype))
        qkv_axes = ("layers", "vision_embed", "vision_heads", "vision_head_dim")
        qkv_bias_axes = ("layers", "vision_heads", "vision_head_dim")
        self.q_proj = dense((L, D, H, hd), qkv_axes, (L, H, hd), qkv_bias_axes, fan_in=D)
        self.k_proj = dense((L, D, H, hd), qkv_axes, (L, H, hd), qkv_bias_axes, fan_in=D)
        self.v_proj = dense((L, D, H, hd), qkv_axes, (L, H, hd), qkv_bias_axes, fan_in=D)
        self.out_proj = dense((L, H, hd, D), ("layers", "vision_heads", "vision_head_dim",
                                              "vision_embed"), (L, D), ln_axes, fan_in=D)
        self.layer_norm2 = LayerNormParams((L, D), ln_axes, param_dtype=jnp.dtype(param_dtype))
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
        for name in _LINEARS:
            mod = getattr(self, name)
            out[f"{name}.kernel"], out[f"{name}.bias"] = mod.kernel[...], mod.bias[...]
        return out


def vit_block(x: jax.Array, p: dict, *, eps: float, activation: str, implementation: Optional[str]) -> jax.Array:
    """One pre-LN block on x [B, T, D] with one layer's parameters `p` (names as `stacked()`)."""
    dt = x.dtype
    w = {k: v if "layer_norm" in k else v.astype(dt) for k, v in p.items()}
    h = layer_norm(x, w["layer_norm1.scale"], w["layer_norm1.bias"], eps)
    q = jnp.einsum("btd,dnh->btnh", h, w["q_proj.kernel"]) + w["q_proj.bias"]
    k = jnp.einsum("btd,dnh->btnh", h, w["k_proj.kernel"]) + w["k_proj.bias"]
    v = jnp.einsum("btd,dnh->btnh", h, w["v_proj.kernel"]) + w["v_proj.bias"]
    # Non-causal, scale head_dim**-0.5; through `attend`, which pads odd lengths (729 SigLIP
    # patches, 577 CLIP tokens) for cuDNN's differentiated kernels.
    a = attend(q, k, v, None, implementation, causal=False)
    x = x + jnp.einsum("btnh,nhd->btd", a, w["out_proj.kernel"]) + w["out_proj.bias"]
    h = layer_norm(x, w["layer_norm2.scale"], w["layer_norm2.bias"], eps)
    h = ACTIVATIONS[activation](h @ w["fc1.kernel"] + w["fc1.bias"])
    return x + h @ w["fc2.kernel"] + w["fc2.bias"]


def run_vit_layers(x: jax.Array, layers: ViTLayers, *, eps: float, activation: str,
                   implementation: Optional[str], remat: bool) -> jax.Array:
    """Scans every block of `layers` over x [B, T, D]; remat saves only each block's input."""
    block = functools.partial(vit_block, eps=eps, activation=activation, implementation=implementation)
    if remat:
        block = jax.checkpoint(block, prevent_cse=False)
    x, _ = jax.lax.scan(lambda h, p: (block(h, p), None), x, layers.stacked())
    return x


def vit_layers_hf_table(prefix: str, path: tuple, num_layers: int, heads: int, head_dim: int) -> list:
    """HFTensor entries of every block: `{prefix}encoder.layers.{i}.*` -> `path + (name, ...)`."""
    table = []
    for i in range(num_layers):
        hl = f"{prefix}encoder.layers.{i}."
        table += norm_entries(hl + "layer_norm1", path + ("layer_norm1",), i)
        for name in ("q_proj", "k_proj", "v_proj"):
            table += linear_entries(hl + "self_attn." + name, path + (name,), i, out_shape=(heads, head_dim))
        table += linear_entries(hl + "self_attn.out_proj", path + ("out_proj",), i, in_shape=(heads, head_dim))
        table += norm_entries(hl + "layer_norm2", path + ("layer_norm2",), i)
        table += linear_entries(hl + "mlp.fc1", path + ("fc1",), i)
        table += linear_entries(hl + "mlp.fc2", path + ("fc2",), i)
    return table
