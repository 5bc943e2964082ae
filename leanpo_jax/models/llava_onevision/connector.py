"""Vision -> LLM connector: mlp2x_gelu projector, per-frame 2-D pooling, `image_newline` tokens.

    video = Newlines(Pool(Linear_2(GELU_erf(Linear_1(features)))))      (LLaVA-OV / LLaVA-Video)

Order matters (docs/model_facts.md §6): project all P patches of every frame, THEN pool each frame's
grid, THEN insert newlines. Features [B, F, P, Dv] map to [B, N, Dt] with
N == `config.num_video_tokens(config, F)`.

Pooling (`config.pool_mode`), per frame on the g x g grid (g = vision grid_size):
  bilinear: resize to ceil(g/2) per side, half-pixel centres, no antialias
            (== torch F.interpolate(mode="bilinear", align_corners=False)); 27 -> 14.
  average:  2x2 mean, stride 2, floor (== torch avg_pool2d(2)); 27 -> 13.
  none:     keep g x g.
Newlines (`config.newline`), tokens row-major within a frame, frames in time order:
  grid: after every row of every frame (F*s*(s+1)); frame: after each frame (F*(s*s+1));
  one_token: one after the whole video (F*s*s+1, HF OV); no_token: none (F*s*s).

Parameter tree (Dv = vision hidden, Dt = text hidden; HF names relative to `prefix`, default
"" for llava-hf files; lmms-lab files name them model.mm_projector.{0,2}.* and
model.image_newline, which hf_io renames):

  path             shape     logical axes         HF tensor -> transform
  linear_1.kernel  [Dv, Dt]  (vision_embed, mlp)  multi_modal_projector.linear_1.weight [Dt,Dv] .T
  linear_1.bias    [Dt]      (mlp)                multi_modal_projector.linear_1.bias -> as is
  linear_2.kernel  [Dt, Dt]  (mlp, embed)         multi_modal_projector.linear_2.weight [Dt,Dt] .T
  linear_2.bias    [Dt]      (embed)              multi_modal_projector.linear_2.bias -> as is
  image_newline    [Dt]      (embed)              image_newline -> as is

The projector's hidden width is named `mlp` so tensor parallelism shards it like the text MLP
(column-parallel linear_1, row-parallel linear_2); `embed` is the text model's hidden axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax.models.llava_onevision.config import VideoLLMConfig, num_video_tokens, pooled_grid
from leanpo_jax.models.hf_tables import HFTensor, export_hf_tensors, linear_entries, load_hf_tensors
from leanpo_jax.models.params import Dense, logical_param
from leanpo_jax.models.video_pooling import insert_newlines, pool_frames  # noqa: F401  (module API)


class VideoConnector(nnx.Module):
    """Projector + pooling + newlines: vision features [B, F, P, Dv] -> video embeds [B, N, Dt]."""

    def __init__(self, config: VideoLLMConfig, *, rngs: nnx.Rngs):
        self.config = config
        dv, dt = config.vision.hidden_size, config.text.hidden_size
        pd = jnp.dtype(config.param_dtype)
        self.linear_1 = Dense((dv, dt), ("vision_embed", "mlp"), (dt,), ("mlp",), fan_in=dv,
                              param_dtype=pd, rngs=rngs)
        self.linear_2 = Dense((dt, dt), ("mlp", "embed"), (dt,), ("embed",), fan_in=dt,
                              param_dtype=pd, rngs=rngs)
        # HF initialises the newline like an embedding row: normal with std 1/sqrt(Dt).
        self.image_newline = logical_param(
            (jax.random.normal(rngs.params(), (dt,), jnp.float32) * dt**-0.5).astype(pd),
            ("embed",))

    def project(self, x: jax.Array) -> jax.Array:
        """linear_2(gelu_erf(linear_1(x))) on [..., Dv] -> [..., Dt], in config.dtype."""
        dt = jnp.dtype(self.config.dtype)
        x = x.astype(dt)
        h = x @ self.linear_1.kernel[...].astype(dt) + self.linear_1.bias[...].astype(dt)
        # The projector's GELU is the exact erf form (nn.GELU() / projector_hidden_act="gelu").
        h = jax.nn.gelu(h, approximate=False)
        return h @ self.linear_2.kernel[...].astype(dt) + self.linear_2.bias[...].astype(dt)

    def __call__(self, features: jax.Array) -> jax.Array:
        cfg = self.config
        b, f, p, _ = features.shape
        if p != cfg.vision.num_patches:
            raise ValueError(f"{p} patches per frame; the vision config gives "
                             f"{cfg.vision.num_patches}")
        x = pool_frames(self.project(features), cfg.pool_mode)
        s = pooled_grid(cfg)
        assert x.shape[2] == s * s, (x.shape, s)
        out = insert_newlines(x, self.image_newline[...], cfg.newline)
        assert out.shape[1] == num_video_tokens(cfg, f), (out.shape, num_video_tokens(cfg, f))
        return out


def connector_hf_table(config: VideoLLMConfig, prefix: str = "") -> list:
    """HF tensors of the connector (llava-hf names under `prefix`; see the module docstring)."""
    del config  # shapes are checked against the module at load time
    mp = prefix + "multi_modal_projector."
    return (linear_entries(mp + "linear_1", ("linear_1",))
            + linear_entries(mp + "linear_2", ("linear_2",))
            + [HFTensor(prefix + "image_newline", ("image_newline",), None, np.asarray,
                        np.asarray)])


def load_connector_state_dict(connector: VideoConnector, state_dict, prefix: str = "") -> None:
    """Loads `multi_modal_projector.linear_{1,2}.{weight,bias}` and `image_newline`."""
    load_hf_tensors(connector, connector_hf_table(connector.config, prefix), state_dict)


def export_connector_state_dict(connector: VideoConnector, prefix: str = "", dtype=None) -> dict:
    """Exports the connector as llava-hf tensors (torch layouts, numpy values)."""
    return export_hf_tensors(connector, connector_hf_table(connector.config, prefix), dtype)
