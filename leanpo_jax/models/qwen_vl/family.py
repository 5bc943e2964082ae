"""The Qwen2-VL / Qwen2.5-VL family behind the seam (models/family.py).

Covers `Qwen2VLForConditionalGeneration` and `Qwen2_5_VLForConditionalGeneration` checkpoints
(hub / 4.x and transformers 5 namings). Host side: every video is resized directly to the run's
static bucket `config.video_size` (multiples of 28) and normalised with the checkpoint's
mean/std; an odd frame count repeats the last frame inside the tower; a video of F frames takes
ceil(F/2)·(H/28)·(W/28) placeholder ids between <|vision_start|> and <|vision_end|>; the prompt's
M-RoPE table comes from `positions.positions_fn` (transformers 4.x / vLLM semantics); the chat
template is Qwen2 ChatML; self-generation decodes greedily (Qwen-family checkpoints).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

from leanpo_jax.data.contract import FramePolicy, ModelInterface
from leanpo_jax.data.tokenizer_files import model_tokenizer_dir
from leanpo_jax.models.family import CheckpointFamily
from leanpo_jax.models.qwen_vl import hf_io
from leanpo_jax.models.qwen_vl.config import PRESETS, QwenVLConfig, num_video_tokens, video_grid
from leanpo_jax.models.qwen_vl.hf_config import FAMILY_NAME, is_family_config, transformers_dict
from leanpo_jax.models.qwen_vl.model import QwenVLModel
from leanpo_jax.models.qwen_vl.positions import positions_fn
from leanpo_jax.models.qwen_vl.template import QWEN_VL_CHATML

# Source limits of the direct resize to the bucket: a video under one 28-px patch pair on a
# side has no patch of its own, and one whose aspect ratio is over 2x off the bucket's would be
# squashed beyond use (both are counted skips, data/frames.check_source_geometry).
MIN_SOURCE_SIDE = 28
MAX_ASPECT_DISTORTION = 2.0


class QwenVLFamily(CheckpointFamily):
    name = FAMILY_NAME
    config_type = QwenVLConfig
    presets = PRESETS

    hf_io = hf_io
    model_class = QwenVLModel

    def accepts_hf(self, config_json: dict) -> bool:
        return is_family_config(config_json)

    def interface(self, config: QwenVLConfig, folder: Optional[str] = None) -> ModelInterface:
        tokenizer = model_tokenizer_dir(folder, config.text.vocab_size)
        v = config.vision
        return ModelInterface(
            family=self.name, vocab_size=config.text.vocab_size, video_token_index=config.video_token_id,
            frames=FramePolicy(size=tuple(config.video_size), resize="direct", mean=tuple(v.image_mean),
                               std=tuple(v.image_std), min_source_side=MIN_SOURCE_SIDE,
                               max_aspect_distortion=MAX_ASPECT_DISTORTION, fps_rule="qwen",
                               size_multiple=v.patch_size * v.spatial_merge_size),
            template=QWEN_VL_CHATML, video_tokens_fn=functools.partial(num_video_tokens, config),
            video_token=None if folder is None else config.video_token, tokenizer=tokenizer,
            positions_fn=positions_fn(config))

    def transformers_model(self, config: QwenVLConfig) -> Tuple[str, dict]:
        d = transformers_dict(config)
        return d["architectures"][0], d

    def transformers_video_inputs(self, config: QwenVLConfig, frames):
        """pixel_values_videos: patch rows [B·t·h·w, C·2·14·14] (the processor's layout) and
        video_grid_thw [B, 3]."""
        import numpy as np

        from leanpo_jax.models.qwen_vl.vision_layout import patchify

        rows = np.asarray(patchify(frames, config.vision))
        grid = np.tile(np.asarray(video_grid(config, frames.shape[1], frames.shape[2:4]), np.int64),
                       (frames.shape[0], 1))
        return {"pixel_values_videos": rows.reshape(-1, rows.shape[-1]), "video_grid_thw": grid}

    def vision_flops(self, config: QwenVLConfig, num_frames: int, size=None) -> float:
        """Forward FLOPs of the ViT (per temporal slice / window attention) + merger on one video
        of `size` (H, W) (default config.video_size)."""
        v, d = config.vision, config.text.hidden_size
        t, h, w = video_grid(config, num_frames, size)
        patches, D = t * h * w, v.hidden_size
        per_block = 2 * patches * (4 * D * D + (2 if v.version == "2" else 3) * D * v.mlp_size)
        span = h * w  # keys per query: the temporal slice (full) or one window (2.5)
        window = (v.window_size // v.patch_size) ** 2
        attn = [2 * 2 * patches * (span if v.version == "2" or i in v.fullatt_block_indexes
                                   else min(window, span)) * D for i in range(v.depth)]
        merged = patches // v.merge_unit
        merger = 2 * merged * (v.merge_unit * D) * (v.merge_unit * D + d)
        return float(v.depth * per_block + sum(attn) + 2 * patches * v.patch_dim * D + merger)


FAMILY = QwenVLFamily()
