"""LLaVA-NeXT-Video configuration (CLIP ViT-L/14-336 + 2x2 pooling + projector + Vicuna) and presets.

Presets describe shapes only; weights come from `load_hf` or a seeded random init. Facts behind
the defaults (transformers' llava_next_video / clip code, the llava-hf conversion script and the
LeanPO authors' fork): docs/model_facts.md §15.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from leanpo_jax.models.family_config import RuntimeFields, check_choice
from leanpo_jax.models.text_config import TextConfig
from leanpo_jax.models.video_pooling import NEWLINE_LAYOUTS, pooled_side, tokens_with_newlines

POOL_MODES = ("average", "max", "bilinear")
# OpenAI-CLIP normalisation (openai/clip-vit-large-patch14-336's preprocessor config).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class ClipVisionConfig:
    """CLIP ViT tower. `num_layers` counts the layers actually run: vision_feature_layer -2 of
    ViT-L/14's 24 runs 23; `post_layernorm` is never applied."""

    image_size: int = 336
    patch_size: int = 14
    num_channels: int = 3
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 23
    num_heads: int = 16
    layer_norm_eps: float = 1e-5
    # Frames: shortest edge to image_size (bicubic), centre crop image_size; (x/255 - mean)/std.
    image_mean: tuple = CLIP_MEAN
    image_std: tuple = CLIP_STD

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
class NextVideoConfig(RuntimeFields):
    """LLaVA-NeXT-Video: CLIP (CLS dropped) -> [pool -> project] or [project -> pool] -> newlines -> Llama.

    `pool_before_projector` True is transformers' order (LlavaNextVideoPooler, then the
    projector); False is the LeanPO authors' training fork (project every patch, then pool):
    avg(MLP(x)) != MLP(avg(x)). `newline`: the fork's mm_newline_position (transformers adds
    none for video: "no_token").
    """

    vision: ClipVisionConfig = dataclasses.field(default_factory=ClipVisionConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    pool_mode: str = "average"
    pool_before_projector: bool = True
    newline: str = "no_token"
    num_frames: int = 32
    image_token_index: int = 32001
    video_token_index: int = 32000
    video_token: str = "<video>"

    def __post_init__(self):
        check_choice("pool_mode", self.pool_mode, POOL_MODES)
        check_choice("newline", self.newline, NEWLINE_LAYOUTS)


def pooled_grid(config: NextVideoConfig) -> int:
    """Tokens per side of one frame after pooling (24 -> 12 average/max, 12 bilinear)."""
    return pooled_side(config.vision.grid_size, config.pool_mode)


def num_video_tokens(config: NextVideoConfig, num_frames: Optional[int] = None) -> int:
    """Placeholder ids one video of `num_frames` frames occupies (16 frames at 336 px: 2,304)."""
    frames = config.num_frames if num_frames is None else int(num_frames)
    return tokens_with_newlines(frames, pooled_grid(config), config.newline)


# Vicuna-7B v1.5 (Llama-2 architecture): MHA, no biases, untied head, 32000 + <video>, <image>,
# <pad> padded to 32064 rows, linear RoPE x2 in LLaVA-NeXT-Video-7B(-DPO).
VICUNA_7B = TextConfig(
    vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
    num_kv_heads=32, rope_theta=10000.0, rms_norm_eps=1e-5, attention_bias=False,
    tie_word_embeddings=False, max_position_embeddings=4096, rope_linear_factor=2.0)

PRESETS = {
    "llava-next-video-7b": NextVideoConfig(vision=ClipVisionConfig(), text=VICUNA_7B, num_frames=32),
    # CPU tests: MHA, untied, linear RoPE x2, the real vocabulary size, an even 4x4 patch grid
    # (-> 2x2 pooled) and an odd hidden/heads split kept small.
    "llava-next-video-tiny": NextVideoConfig(
        vision=ClipVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                num_layers=2, num_heads=4),
        text=TextConfig(vocab_size=32064, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=4, rope_theta=10000.0, rms_norm_eps=1e-5,
                        attention_bias=False, tie_word_embeddings=False,
                        max_position_embeddings=4096, rope_linear_factor=2.0),
        num_frames=4),
}
