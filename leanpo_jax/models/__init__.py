"""Flax NNX Video-LLMs, one package per model family behind one seam (family.py, registry.py).

    model = load_hf(path)                                   # or build_model("tiny", seed=0)
    video_embeds = model.encode_video(frames)               # [B, F, H, W, 3] normalised
    hidden = model(input_ids, video_embeds=video_embeds)    # [B, T, D]
    logits = hidden @ model.lm_head_kernel()                # [D, V]
    source = resolve_model(preset="tiny")  # or init_from=DIR: family, config, data interface

Families: llava_onevision (LLaVA-OneVision / LLaVA-Video: SigLIP + projector + Qwen2),
llava_next_video (LLaVA-NeXT-Video: CLIP + pooling/projector + Vicuna).
"""

from leanpo_jax.models.attention import KV, KVCache, repeat_cache
from leanpo_jax.models.family import MODEL_PROTOCOL, Family
from leanpo_jax.models.llava_next_video.config import ClipVisionConfig, NextVideoConfig
from leanpo_jax.models.llava_next_video.model import NextVideoLLM
from leanpo_jax.models.llava_onevision.config import VideoLLMConfig, VisionConfig
from leanpo_jax.models.llava_onevision.model import VideoLLM
from leanpo_jax.models.registry import (
    FAMILIES, ModelSource, abstract_model, build_model, checkpoint_family, family_of, get_preset,
    load_hf, num_video_tokens, preset_family, presets, register, resolve_model, save_hf,
)
from leanpo_jax.models.text_config import TextConfig

__all__ = [
    "FAMILIES", "KV", "KVCache", "MODEL_PROTOCOL", "ClipVisionConfig", "Family", "ModelSource",
    "NextVideoConfig", "NextVideoLLM", "TextConfig", "VideoLLM",
    "VideoLLMConfig", "VisionConfig", "abstract_model", "build_model", "checkpoint_family",
    "family_of", "get_preset", "load_hf", "num_video_tokens", "preset_family", "presets",
    "register", "repeat_cache", "resolve_model", "save_hf",
]
