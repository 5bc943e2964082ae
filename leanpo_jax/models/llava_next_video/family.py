"""The LLaVA-NeXT-Video family behind the seam (models/family.py).

Covers llava-hf `LlavaNextVideoForConditionalGeneration` (LLaVA-NeXT-Video-7B-hf, -7B-DPO-hf)
and the original lmms-lab `LlavaLlamaForCausalLM` files with a CLIP tower. Host side: frames
are resized on the shortest edge and centre-cropped to the tower's size (CLIP), normalised with
the checkpoint's mean/std; a video of F frames takes `num_video_tokens(config, F)` placeholder
ids (F·144 at 336 px); the chat template is vicuna_v1 with one BOS; self-generation samples
(T 1.0, top-p 0.9 winner / 1.0 loser), as Vicuna-era LLaVA models were decoded.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

from leanpo_jax.data.contract import FramePolicy, ModelInterface
from leanpo_jax.data.tokenizer_files import model_tokenizer_dir
from leanpo_jax.models.family import CheckpointFamily, NUCLEUS
from leanpo_jax.models.llava_next_video import hf_io
from leanpo_jax.models.llava_next_video.config import PRESETS, NextVideoConfig, num_video_tokens
from leanpo_jax.models.llava_next_video.hf_config import (
    FAMILY_NAME, hf_config_dict, is_family_config, matches_transformers,
)
from leanpo_jax.models.llava_next_video.model import NextVideoLLM
from leanpo_jax.models.llava_next_video.template import VICUNA_V1


class LlavaNextVideoFamily(CheckpointFamily):
    name = FAMILY_NAME
    config_type = NextVideoConfig
    presets = PRESETS

    hf_io = hf_io
    model_class = NextVideoLLM

    def accepts_hf(self, config_json: dict) -> bool:
        return is_family_config(config_json)

    def interface(self, config: NextVideoConfig, folder: Optional[str] = None) -> ModelInterface:
        v = config.vision
        return ModelInterface(
            family=self.name, vocab_size=config.text.vocab_size,
            video_token_index=config.video_token_index,
            frames=FramePolicy(size=(v.image_size, v.image_size), resize="shortest_edge_crop",
                               mean=tuple(v.image_mean), std=tuple(v.image_std)),
            template=VICUNA_V1,
            video_tokens_fn=functools.partial(num_video_tokens, config),
            # Only a checkpoint's tokenizer is checked against the placeholder's text.
            video_token=None if folder is None else config.video_token,
            # No Llama tokenizer ships offline: a preset needs data.tokenizer.
            tokenizer=model_tokenizer_dir(folder, config.text.vocab_size))

    def transformers_model(self, config: NextVideoConfig) -> Tuple[str, dict]:
        """LlavaNextVideoForConditionalGeneration and its config.json dict; ValueError for the
        fork's project-then-pool order, bilinear pooling or newline layouts."""
        reason = matches_transformers(config)
        if reason:
            raise ValueError(f"no transformers equivalent: {reason}")
        d = hf_config_dict(config)
        d.pop("leanpo_jax", None)
        d.pop("dtype", None)
        return d["architectures"][0], d

    def decoding_defaults(self, config: NextVideoConfig):
        del config
        return NUCLEUS

    def vision_flops(self, config: NextVideoConfig, num_frames: int) -> float:
        """Forward FLOPs of CLIP (P + 1 tokens, L layers) + pooling + projector on one video."""
        v, d = config.vision, config.text.hidden_size
        tokens = v.num_patches + 1
        per_layer = 4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size
        tower = 2.0 * num_frames * tokens * v.num_layers * (per_layer + 2 * tokens * v.hidden_size)
        projected = (num_video_tokens(config, num_frames) if config.pool_before_projector
                     else num_frames * v.num_patches)
        return tower + 2.0 * projected * (v.hidden_size * d + d * d)


FAMILY = LlavaNextVideoFamily()
