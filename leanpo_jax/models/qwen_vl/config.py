"""Qwen2-VL / Qwen2.5-VL configuration (native ViT with 2-D RoPE, 2x2 merger, M-RoPE Qwen2 decoder).

One family, two versions (`QwenVisionConfig.version` "2" or "2.5"). Videos come in one static
bucket per run: `frames` x `height` x `width` (multiples of 28), so the vision grid, the window
permutation and the M-RoPE table are fixed per run and computed once on the host.
Facts behind the defaults (transformers' qwen2_vl / qwen2_5_vl code): docs/model_facts.md §16.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from leanpo_jax.models.family_config import RuntimeFields, check_choice
from leanpo_jax.models.text_config import TextConfig

VERSIONS = ("2", "2.5")
# Qwen's image processor statistics (OpenAI-CLIP's), used by every released Qwen-VL checkpoint.
QWEN_MEAN = (0.48145466, 0.4578275, 0.40821073)
QWEN_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class QwenVisionConfig:
    """The Qwen-VL ViT. 2: LayerNorm, fused qkv, quick_gelu MLP (hidden * mlp_ratio); 2.5:
    RMSNorm, SwiGLU MLP with biases (intermediate_size), window attention except in
    `fullatt_block_indexes`. `out_hidden_size`: the LLM width the merger projects to."""

    version: str = "2"
    depth: int = 32
    hidden_size: int = 1280
    num_heads: int = 16
    mlp_ratio: float = 4.0  # version 2
    intermediate_size: int = 3420  # version 2.5
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    window_size: int = 112  # version 2.5: pixels per window side (8 x 8 patches)
    fullatt_block_indexes: Tuple[int, ...] = (7, 15, 23, 31)
    out_hidden_size: int = 3584
    norm_eps: float = 1e-6
    image_mean: tuple = QWEN_MEAN
    image_std: tuple = QWEN_STD

    def __post_init__(self):
        check_choice("vision.version", self.version, VERSIONS)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_size(self) -> int:
        return int(self.hidden_size * self.mlp_ratio) if self.version == "2" else self.intermediate_size

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size**2

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclasses.dataclass(frozen=True)
class QwenVLConfig(RuntimeFields):
    """Qwen2-VL / Qwen2.5-VL: ViT -> merger -> Qwen2 decoder with M-RoPE (`text.mrope_section`).

    The video bucket: `num_frames` frames resized to `video_size` (H, W), multiples of
    patch_size * spatial_merge_size (28). `tokens_per_second` x `second_per_grid_t` is the
    Qwen2.5-VL time-axis step per temporal patch (Qwen2-VL: 1); `second_per_grid_t` is
    temporal_patch_size / the sampled fps.
    """

    vision: QwenVisionConfig = dataclasses.field(default_factory=QwenVisionConfig)
    # Qwen2-VL-7B's decoder: mrope_section (16, 24, 24) covers exactly its 64 rotary frequencies.
    text: TextConfig = dataclasses.field(default_factory=lambda: _text(152064, 3584, 18944, 28, 28, 4, False))
    num_frames: int = 32
    video_size: Tuple[int, int] = (448, 448)
    tokens_per_second: float = 2.0
    second_per_grid_t: float = 1.0
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    video_token: str = "<|video_pad|>"

    def __post_init__(self):
        check_video_size(self, self.video_size)
        if self.text.mrope_section is None:
            raise ValueError("text.mrope_section is required (Qwen-VL decoders use M-RoPE)")
        head_dim = self.text.resolved_head_dim
        if sum(self.text.mrope_section) != head_dim // 2:
            raise ValueError(f"text.mrope_section={tuple(self.text.mrope_section)} sums to "
                             f"{sum(self.text.mrope_section)}, but head_dim {head_dim} has {head_dim // 2} "
                             "rotary frequencies (each goes to one of the t / h / w axes)")

    @property
    def video_token_index(self) -> int:
        """The placeholder id (the name the data side and the merge use)."""
        return self.video_token_id

    @property
    def image_token_index(self) -> int:
        return self.image_token_id


def check_video_size(config: QwenVLConfig, size, key: str = "video_size") -> Tuple[int, int]:
    """(H, W) as ints, both positive multiples of patch_size * spatial_merge_size (28), else a
    ValueError naming `key`."""
    step = config.vision.patch_size * config.vision.spatial_merge_size
    try:
        h, w = (int(x) for x in size)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={size!r}: expected (height, width)") from None
    if h % step or w % step or h < step or w < step:
        raise ValueError(f"{key}={tuple(size)}: height and width must be positive multiples of "
                         f"patch_size * spatial_merge_size = {step}")
    return h, w


def video_grid(config: QwenVLConfig, num_frames: Optional[int] = None, size=None) -> Tuple[int, int, int]:
    """(t, h, w) patch grid of one video of `size` (H, W) (default config.video_size):
    (ceil(F / 2), H / 14, W / 14)."""
    v = config.vision
    frames = config.num_frames if num_frames is None else int(num_frames)
    t = -(-frames // v.temporal_patch_size)
    height, width = config.video_size if size is None else size
    return t, int(height) // v.patch_size, int(width) // v.patch_size


def num_video_tokens(config: QwenVLConfig, num_frames: Optional[int] = None, size=None) -> int:
    """Placeholder ids of one video: t * (h / 2) * (w / 2) (32 frames at 448^2: 4,096)."""
    t, h, w = video_grid(config, num_frames, size)
    return t * h * w // config.vision.merge_unit


def _text(vocab, hidden, inter, layers, heads, kv, tied, max_pos=32768) -> TextConfig:
    return TextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_layers=layers,
                      num_heads=heads, num_kv_heads=kv, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                      attention_bias=True, tie_word_embeddings=tied, max_position_embeddings=max_pos,
                      mrope_section=(16, 24, 24))


_V2 = QwenVisionConfig(version="2")
_V25 = QwenVisionConfig(version="2.5")
_TINY_TEXT = TextConfig(vocab_size=151936, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                        num_kv_heads=2, rope_theta=1_000_000.0, rms_norm_eps=1e-6, attention_bias=True,
                        tie_word_embeddings=True, max_position_embeddings=4096, mrope_section=(2, 3, 3))

PRESETS = {
    "qwen2-vl-2b": QwenVLConfig(vision=dataclasses.replace(_V2, out_hidden_size=1536),
                                text=_text(151936, 1536, 8960, 28, 12, 2, True)),
    "qwen2-vl-7b": QwenVLConfig(vision=dataclasses.replace(_V2, out_hidden_size=3584),
                                text=_text(152064, 3584, 18944, 28, 28, 4, False)),
    "qwen2.5-vl-3b": QwenVLConfig(vision=dataclasses.replace(_V25, out_hidden_size=2048),
                                  text=_text(151936, 2048, 11008, 36, 16, 2, True, 128000)),
    "qwen2.5-vl-7b": QwenVLConfig(vision=dataclasses.replace(_V25, out_hidden_size=3584),
                                  text=_text(152064, 3584, 18944, 28, 28, 4, False, 128000)),
    # CPU tests: real patch / merge sizes, 2 (2.5: 4) narrow ViT blocks, 56 px frames (4 x 4
    # patches -> 2 x 2 tokens per temporal patch), the real Qwen vocabulary and ids.
    "qwen2-vl-tiny": QwenVLConfig(
        vision=QwenVisionConfig(version="2", depth=2, hidden_size=32, num_heads=2, mlp_ratio=2.0,
                                out_hidden_size=64),
        text=_TINY_TEXT, num_frames=4, video_size=(56, 56)),
    # 2.5: 56 px windows (4 x 4 patches); 84 px frames make them ragged (4 + 2 patches a side).
    "qwen2.5-vl-tiny": QwenVLConfig(
        vision=QwenVisionConfig(version="2.5", depth=4, hidden_size=32, num_heads=2, intermediate_size=48,
                                window_size=56, fullatt_block_indexes=(1, 3), out_hidden_size=64),
        text=_TINY_TEXT, num_frames=4, video_size=(84, 84)),
}
