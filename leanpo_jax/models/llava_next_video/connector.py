"""CLIP features -> video embeddings: 2x2 pooling and the mlp2x_gelu projector, in either order.

    pool_before_projector (transformers):   video = MLP(Pool(features))
    else (the LeanPO authors' fork):        video = Pool(MLP(features))
    MLP(x) = linear_2(GELU_erf(linear_1(x)))

Pooling per frame on the g x g patch grid (video_pooling.py, `config.pool_mode`): average
(transformers' AvgPool2d(2), floor; 24 -> 12), max, or bilinear (ceil). Newlines
(`config.newline`, the fork's mm_newline_position) follow; transformers adds none for video.
Features [B, F, P, Dv] -> [B, N, Dt] with N == num_video_tokens(config, F).

Parameters and HF tensors (llava-hf names; lmms-lab files name the projector
model.mm_projector.{0,2}.*, which hf_io renames):
  linear_1.kernel [Dv, Dt] (vision_embed, mlp)   multi_modal_projector.linear_1.weight .T (+ .bias)
  linear_2.kernel [Dt, Dt] (mlp, embed)          multi_modal_projector.linear_2.weight .T (+ .bias)
  image_newline   [Dt]     (embed)               image_newline (the image anyres path's newline;
                                                 used for video only by a newline layout)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax.models.hf_tables import HFTensor, linear_entries
from leanpo_jax.models.llava_next_video.config import NextVideoConfig, num_video_tokens
from leanpo_jax.models.params import Dense, logical_param
from leanpo_jax.models.video_pooling import insert_newlines, pool_frames


class NextVideoConnector(nnx.Module):
    """Pooling + projector (+ newlines): CLIP features [B, F, P, Dv] -> video embeds [B, N, Dt]."""

    def __init__(self, config: NextVideoConfig, *, rngs: nnx.Rngs):
        self.config = config
        dv, dt = config.vision.hidden_size, config.text.hidden_size
        pd = jnp.dtype(config.param_dtype)
        self.linear_1 = Dense((dv, dt), ("vision_embed", "mlp"), (dt,), ("mlp",), fan_in=dv,
                              param_dtype=pd, rngs=rngs)
        self.linear_2 = Dense((dt, dt), ("mlp", "embed"), (dt,), ("embed",), fan_in=dt,
                              param_dtype=pd, rngs=rngs)
        self.image_newline = logical_param(
            (jax.random.normal(rngs.params(), (dt,), jnp.float32) * dt**-0.5).astype(pd), ("embed",))

    def project(self, x: jax.Array) -> jax.Array:
        """linear_2(gelu_erf(linear_1(x))) on [..., Dv] -> [..., Dt], in config.dtype."""
        dt = jnp.dtype(self.config.dtype)
        h = x.astype(dt) @ self.linear_1.kernel[...].astype(dt) + self.linear_1.bias[...].astype(dt)
        h = jax.nn.gelu(h, approximate=False)  # projector_hidden_act "gelu": the exact erf form
        return h @ self.linear_2.kernel[...].astype(dt) + self.linear_2.bias[...].astype(dt)

    def __call__(self, features: jax.Array) -> jax.Array:
        cfg = self.config
        f, p = features.shape[1:3]
        if p != cfg.vision.num_patches:
            raise ValueError(f"{p} patches per frame; the vision config gives {cfg.vision.num_patches}")
        if cfg.pool_before_projector:
            x = self.project(pool_frames(features, cfg.pool_mode))
        else:
            x = pool_frames(self.project(features), cfg.pool_mode)
        out = insert_newlines(x, self.image_newline[...], cfg.newline)
        assert out.shape[1] == num_video_tokens(cfg, f), (out.shape, num_video_tokens(cfg, f))
        return out


def connector_hf_table(config: NextVideoConfig) -> list:
    """HF tensors of the connector (llava-hf names; see the module docstring)."""
    del config  # shapes are checked against the module at load time
    return (linear_entries("multi_modal_projector.linear_1", ("linear_1",))
            + linear_entries("multi_modal_projector.linear_2", ("linear_2",))
            + [HFTensor("image_newline", ("image_newline",), None, np.asarray, np.asarray)])
