"""SigLIP vision tower in Flax NNX (the LLaVA-OneVision / LLaVA-Video feature extractor).

    y = Block_L(...Block_1(PatchEmbed(x) + pos)),
    Block(h) = h' + MLP(LN2(h')),  h' = h + Attn(LN1(h))

Pre-LN blocks, non-causal attention with q/k/v/out biases, MLP fc1 -> tanh-GELU -> fc2. The tower
returns the LAST BLOCK's output: `post_layernorm` is kept as a parameter (HF checkpoints carry
it and a load/save round trip must be exact) but is never applied, because LLaVA feeds the
26th layer's output before post-LN to the projector (docs/model_facts.md §4). Build `num_layers=26`.

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

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from leanpo_jax.models.attention import attend
from leanpo_jax.models.llava_onevision.config import VideoLLMConfig
from leanpo_jax.models.hf_tables import (
    HFTensor, export_hf_tensors, identity, linear_entries, load_hf_tensors, norm_entries,
)
from leanpo_jax.models.params import Dense, LayerNormParams, logical_param, normal_init

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
    # Through `attend`: cuDNN's differentiated kernels need even lengths (729 patches is odd).
    a = attend(q, k, v, None, implementation, causal=False)
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
            normal_init(rngs, (v.num_patches, D), D**-0.5, pd), (None, "vision_embed"))
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


def siglip_hf_table(config: VideoLLMConfig, prefix: str = "vision_model.") -> list:
    """Every HF tensor the tower holds, in checkpoint order (see the module docstring)."""
    v = config.vision
    H, hd = v.num_heads, v.head_dim
    e = prefix + "embeddings."
    table = [
        HFTensor(e + "patch_embedding.weight", ("patch_embed", "kernel"), None,
                 lambda a: a.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1)),
        HFTensor(e + "patch_embedding.bias", ("patch_embed", "bias"), None, identity, identity),
        HFTensor(e + "position_embedding.weight", ("position_embedding",), None, identity, identity),
    ]
    for i in range(v.num_layers):
        hl = f"{prefix}encoder.layers.{i}."
        table += norm_entries(hl + "layer_norm1", ("layers", "layer_norm1"), i)
        for name in ("q_proj", "k_proj", "v_proj"):
            table += linear_entries(hl + "self_attn." + name, ("layers", name), i,
                                    out_shape=(H, hd))
        table += linear_entries(hl + "self_attn.out_proj", ("layers", "out_proj"), i,
                                in_shape=(H, hd))
        table += norm_entries(hl + "layer_norm2", ("layers", "layer_norm2"), i)
        table += linear_entries(hl + "mlp.fc1", ("layers", "fc1"), i)
        table += linear_entries(hl + "mlp.fc2", ("layers", "fc2"), i)
    table += norm_entries(prefix + "post_layernorm", ("post_layernorm",))
    return table


def load_siglip_state_dict(tower: SiglipVisionTower, state_dict,
                           prefix: str = "vision_model.") -> None:
    """Loads a transformers SiglipVisionModel-style state dict (numpy values) into `tower`."""
    load_hf_tensors(tower, siglip_hf_table(tower.config, prefix), state_dict)


def export_siglip_state_dict(tower: SiglipVisionTower, prefix: str = "vision_model.",
                             dtype=None) -> dict:
    """Exports `tower` as a SiglipVisionModel-style state dict (post_layernorm included)."""
    return export_hf_tensors(tower, siglip_hf_table(tower.config, prefix), dtype)
