"""Flax NNX Video-LLMs (LLaVA-OneVision / LLaVA-Video: SigLIP + projector + Qwen2).

    model = load_hf(path)                                   # or build_model("tiny", seed=0)
    video_embeds = model.encode_video(frames)               # [B, F, H, W, 3] normalised
    hidden = model(input_ids, video_embeds=video_embeds)    # [B, T, D]
    logits = hidden @ model.lm_head_kernel()                # [D, V]
"""

from leanpo_jax.models.attention import KV, KVCache, repeat_cache
from leanpo_jax.models.config import (
    PRESETS, TextConfig, VideoLLMConfig, VisionConfig, get_preset, num_video_tokens,
)
from leanpo_jax.models.hf_io import load_hf, save_hf
from leanpo_jax.models.video_llm import VideoLLM, abstract_model, build_model

__all__ = [
    "KV", "KVCache", "PRESETS", "TextConfig", "VideoLLM", "VideoLLMConfig", "VisionConfig",
    "abstract_model", "build_model", "get_preset", "load_hf", "num_video_tokens", "repeat_cache",
    "save_hf",
]
