"""LLaVA-OneVision / LLaVA-Video configuration (SigLIP + projector + pooling + Qwen2) and presets.

Presets describe shapes only; weights come from `load_hf` or a seeded random init.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from leanpo_jax.models.family_config import RuntimeFields, check_choice
from leanpo_jax.models.text_config import TextConfig
from leanpo_jax.models.video_pooling import NEWLINE_LAYOUTS, pooled_side, tokens_with_newlines

POOL_MODES = ("bilinear", "average", "none")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """SigLIP vision tower. `num_layers` counts the layers actually run (26 for LLaVA-OV)."""

    image_size: int = 384
    patch_size: int = 14
    num_channels: int = 3
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_layers: int = 26
    num_heads: int = 16
    layer_norm_eps: float = 1e-6
    # Normalisation the data pipeline applies to uint8 frames: (x / 255 - mean) / std.
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.5, 0.5, 0.5)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class VideoLLMConfig(RuntimeFields):
    """LLaVA-OneVision / LLaVA-Video: SigLIP -> projector -> per-frame pool -> newlines -> Qwen2.

    `vision=None` describes a text-only decoder (a plain Qwen2 / Llama causal-LM checkpoint).
    """

    vision: Optional[VisionConfig] = dataclasses.field(default_factory=VisionConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    pool_mode: str = "bilinear"  # bilinear: ceil(n/2) per side; average: 2x2 avg pool, floor
    newline: str = "one_token"  # grid | one_token | frame | no_token
    num_frames: int = 32
    image_token_index: int = 151646
    video_token_index: int = 151647
    # The placeholder's text in the model's own tokenizer (llava-hf: "<video>"); a checkpoint's
    # tokenizer.json must map video_token_index to it. Ids are always inserted directly.
    video_token: str = "<video>"

    def __post_init__(self):
        check_choice("pool_mode", self.pool_mode, POOL_MODES)
        check_choice("newline", self.newline, NEWLINE_LAYOUTS)


def pooled_grid(config: VideoLLMConfig) -> int:
    """Tokens per side of one frame after pooling (27 -> 14 bilinear, 13 average)."""
    return pooled_side(config.vision.grid_size, config.pool_mode)


def num_video_tokens(config: VideoLLMConfig, num_frames: Optional[int] = None) -> int:
    """Number of placeholder ids one video of `num_frames` frames occupies in the prompt."""
    if config.vision is None:
        raise ValueError("this model has no vision tower (text-only config): it takes no video")
    frames = config.num_frames if num_frames is None else int(num_frames)
    return tokens_with_newlines(frames, pooled_grid(config), config.newline)


_SIGLIP_SO400M = VisionConfig()

PRESETS = {
    # CPU tests: every shape relation kept (GQA, odd 3x3 patch grid, full Qwen vocabulary).
    "tiny": VideoLLMConfig(
        vision=VisionConfig(
            image_size=24, patch_size=8, hidden_size=32, intermediate_size=64,
            num_layers=2, num_heads=4,
        ),
        text=TextConfig(
            vocab_size=151936, hidden_size=64, intermediate_size=128, num_layers=2,
            num_heads=4, num_kv_heads=2, rope_theta=10000.0, tie_word_embeddings=True,
            max_position_embeddings=4096,
        ),
        pool_mode="bilinear",
        newline="one_token",
        num_frames=4,
    ),
    # The embedded demo (leanpo_jax.demo): 64-px frames, 8 frames, a few-hundred-entry tokenizer
    # trained on the synthetic corpus (ids 0-4 are its specials: 3 = <video>, 4 = <image>).
    "demo": VideoLLMConfig(
        vision=VisionConfig(
            image_size=64, patch_size=16, hidden_size=64, intermediate_size=128,
            num_layers=2, num_heads=4,
        ),
        text=TextConfig(
            vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=3,
            num_heads=4, num_kv_heads=2, rope_theta=10000.0, tie_word_embeddings=True,
            max_position_embeddings=1024,
        ),
        pool_mode="bilinear",
        newline="one_token",
        num_frames=8,
        image_token_index=4,
        video_token_index=3,
    ),
    "llava-ov-qwen2-0.5b": VideoLLMConfig(
        vision=_SIGLIP_SO400M,
        text=TextConfig(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
            num_heads=14, num_kv_heads=2, rope_theta=1_000_000.0, tie_word_embeddings=True,
        ),
        pool_mode="bilinear",
        newline="one_token",
        num_frames=32,
    ),
    "llava-video-qwen2-7b": VideoLLMConfig(
        vision=_SIGLIP_SO400M,
        text=TextConfig(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
            num_heads=28, num_kv_heads=4, rope_theta=1_000_000.0, tie_word_embeddings=False,
        ),
        pool_mode="bilinear",
        newline="grid",
        num_frames=64,
    ),
}

