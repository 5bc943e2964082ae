"""CLIP ViT vision tower in Flax NNX (LLaVA-NeXT-Video's feature extractor).

    x = pre_LN([cls ‖ PatchEmbed(pixels)] + pos);   y = Block_L(...Block_1(x));   out = y[:, 1:]

Patch embedding is a stride-p conv WITHOUT bias; a learned class embedding is prepended and
P + 1 learned positions added; `pre_layrnorm` runs before the blocks (vision_blocks.py, CLIP's
quick_gelu MLP, LayerNorm eps 1e-5). The tower returns layer L's output with CLS dropped
(vision_feature_layer -2 with the "default" select strategy: build L = 23 of ViT-L's 24);
`post_layernorm` is kept for exact round trips and never applied.

Pixels are channels-last [..., H, W, C], already normalised; output [..., P, D], patches in
row-major (h, w) order.

Parameter tree (vision_blocks.py for `layers`) and HF tensors (names after `prefix`:
"vision_model." in hub files, "" in transformers 5's in-memory CLIPVisionModel names):
  patch_embed          [p, p, C, D]  (-, -, -, emb)   embeddings.patch_embedding.weight [D, C, p, p]
                                                      -> transpose(2, 3, 1, 0)
  class_embedding      [D]           (emb)            embeddings.class_embedding
  position_embedding   [P+1, D]      (-, emb)         embeddings.position_embedding.weight
  pre_layrnorm.{scale,bias}  [D]     (emb)            pre_layrnorm.{weight,bias}
  layers.*                                            encoder.layers.{i}.*
  post_layernorm.{scale,bias} [D]    (emb)            post_layernorm.{weight,bias} (never applied)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from leanpo_jax.models.hf_tables import HFTensor, identity, norm_entries
from leanpo_jax.models.llava_next_video.config import NextVideoConfig
from leanpo_jax.models.params import LayerNormParams, logical_param, normal_init
from leanpo_jax.models.vision_blocks import ViTLayers, layer_norm, run_vit_layers, vit_layers_hf_table


class ClipVisionTower(nnx.Module):
    """CLIP ViT: pixels [..., H, W, C] -> layer L's hidden states without CLS [..., P, D]."""

    def __init__(self, config: NextVideoConfig, *, rngs: nnx.Rngs):
        v = config.vision
        self.config = config
        pd = jnp.dtype(config.param_dtype)
        p, C, D = v.patch_size, v.num_channels, v.hidden_size
        self.patch_embed = logical_param(normal_init(rngs, (p, p, C, D), (p * p * C) ** -0.5, pd),
                                         (None, None, None, "vision_embed"))
        self.class_embedding = logical_param(normal_init(rngs, (D,), D**-0.5, pd), ("vision_embed",))
        self.position_embedding = logical_param(normal_init(rngs, (v.num_patches + 1, D), 0.02, pd),
                                                (None, "vision_embed"))
        self.pre_layrnorm = LayerNormParams((D,), ("vision_embed",), param_dtype=pd)
        self.layers = ViTLayers(v.num_layers, D, v.num_heads, v.intermediate_size, param_dtype=pd, rngs=rngs)
        self.post_layernorm = LayerNormParams((D,), ("vision_embed",), param_dtype=pd)

    def embed(self, pixels: jax.Array) -> jax.Array:
        """[N, H, W, C] -> pre-LN'd [cls ‖ patches] + positions [N, P + 1, D]; like torch's
        "valid" conv, trailing pixels that fill no whole patch are dropped."""
        v = self.config.vision
        dt = jnp.dtype(self.config.dtype)
        n, g, p = pixels.shape[0], v.grid_size, v.patch_size
        if pixels.shape[1:] != (v.image_size, v.image_size, v.num_channels):
            raise ValueError(f"pixels {pixels.shape} do not match vision config {v}")
        x = pixels[:, : g * p, : g * p].astype(dt).reshape(n, g, p, g, p, v.num_channels)
        x = jnp.einsum("nhpwqc,pqcd->nhwd", x, self.patch_embed[...].astype(dt)).reshape(n, g * g, -1)
        cls = jnp.broadcast_to(self.class_embedding[...].astype(dt), (n, 1, v.hidden_size))
        x = jnp.concatenate([cls, x], axis=1) + self.position_embedding[...].astype(dt)
        return layer_norm(x, self.pre_layrnorm.scale[...], self.pre_layrnorm.bias[...], v.layer_norm_eps)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        lead = pixels.shape[:-3]
        x = self.embed(pixels.reshape((-1,) + pixels.shape[-3:]))
        x = run_vit_layers(x, self.layers, eps=self.config.vision.layer_norm_eps, activation="quick_gelu",
                           implementation=self.config.attention_impl, remat=self.config.remat)
        x = x[:, 1:]  # the "default" feature select strategy drops CLS
        return x.reshape(lead + x.shape[1:])


def clip_hf_table(config: NextVideoConfig, prefix: str = "vision_model.") -> list:
    """Every HF tensor of the tower (module docstring), in checkpoint order; checkpoint layers
    with index >= L (ViT-L's 24th) are not part of it."""
    v = config.vision
    e = prefix + "embeddings."
    return ([
        HFTensor(e + "class_embedding", ("class_embedding",), None, identity, identity),
        HFTensor(e + "patch_embedding.weight", ("patch_embed",), None,
                 lambda a: a.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1)),
        HFTensor(e + "position_embedding.weight", ("position_embedding",), None, identity, identity),
    ] + norm_entries(prefix + "pre_layrnorm", ("pre_layrnorm",))
        + vit_layers_hf_table(prefix, ("layers",), v.num_layers, v.num_heads, v.head_dim)
        + norm_entries(prefix + "post_layernorm", ("post_layernorm",)))
