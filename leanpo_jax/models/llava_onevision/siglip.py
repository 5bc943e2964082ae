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


import jax
import jax.numpy as jnp
from flax import nnx

from leanpo_jax.models.hf_tables import (
    HFTensor, export_hf_tensors, identity, load_hf_tensors, norm_entries,
)
from leanpo_jax.models.llava_onevision.config import VideoLLMConfig
from leanpo_jax.models.params import Dense, LayerNormParams, logical_param, normal_init
from leanpo_jax.models.vision_blocks import (  # noqa: F401  (layer_norm: part of this module's API)
    ViTLayers, layer_norm, run_vit_layers, vit_layers_hf_table,
)


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
        self.layers = ViTLayers(v.num_layers, D, v.num_heads, v.intermediate_size, param_dtype=pd, rngs=rngs)
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
        # SigLIP's MLP uses gelu_pytorch_tanh, i.e. the tanh approximation (unlike the projector).
        x = run_vit_layers(x, self.layers, eps=self.config.vision.layer_norm_eps, activation="gelu_tanh",
                           implementation=self.config.attention_impl, remat=self.config.remat)
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
    table += vit_layers_hf_table(prefix, ("layers",), v.num_layers, H, hd)
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
