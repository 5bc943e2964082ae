"""CLIP features -> video embeddings: 2x2 pooling and the mlp2x_gelu projector, in either order.

    pool_before_projector (transformers):   video = MLP(Pool(features))
    else (the LeanPO authors' fork):        video = Pool(MLP(features))
    MLP(x) = linear_2(GELU_erf(linear_1(x)))

Pooling per frame on the g x g patch grid (video_pooling.py, `config.pool_mode`): average
(transformers' AvgPool2d(2), floor; 24 -> 12), max, or bilinear (ceil). Newlines
(`config.newline`, the fork's mm_newline_position) follow; transformers adds none for video.
Features [B, F, P, Dv] -> [B, N, Dt] with N == num_video_tokens(config, F).

Parameters and HF tensors (llava_onevision.connector's `connector_hf_table`, llava-hf names;
lmms-lab files name the projector model.mm_projector.{0,2}.*, which hf_io renames):
  linear_1.kernel [Dv, Dt] (vision_embed, mlp)   multi_modal_projector.linear_1.weight .T (+ .bias)
  linear_2.kernel [Dt, Dt] (mlp, embed)          multi_modal_projector.linear_2.weight .T (+ .bias)
  image_newline   [Dt]     (embed)               image_newline (the image anyres path's newline;
                                                 used for video only by a newline layout)
"""

from __future__ import annotations

import jax

from leanpo_jax.models.llava_next_video.config import num_video_tokens
from leanpo_jax.models.llava_onevision.connector import VideoConnector
from leanpo_jax.models.video_pooling import insert_newlines, pool_frames


class NextVideoConnector(VideoConnector):
    """Pooling + projector (+ newlines): CLIP features [B, F, P, Dv] -> video embeds [B, N, Dt].
    The parameters and `project` are the LLaVA mlp2x_gelu ones (llava_onevision.connector)."""

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
