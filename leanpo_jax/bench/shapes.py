"""The benchmark shapes: LLM-only and video-pair train steps (docs/performance.md §1), full and tiny.

Token accounting follows the PyTorch peer: a pair is two sequences of `seq` tokens
(prompt + response), so tokens per step = 2 · pairs · seq for both layouts; the shared layout,
which runs each prompt once, therefore reports "naive-equivalent" tokens/s.
LLM-only shapes put the response in the last `response` positions (seq − response prompt
tokens); video shapes hold `prompt_text` text tokens plus the video's placeholder tokens.
A shape names its model by preset (any registered family); the preset is looked up only when
the shape's config is needed (`StepShape.config`), so a list may name a family that is not
installed until that row runs. `lora_rank` > 0: LoRA adapters (alpha 2r) on every linear layer of
the language model, the base frozen in the compute dtype, adapters only trained (ours and the
peer's, with peft) — the same shape's full-fine-tuning row beside it gives the comparison.
"""

from __future__ import annotations

import dataclasses
from typing import List

from leanpo_jax.models import TextConfig, get_preset, num_video_tokens
from leanpo_jax.models.lora import LoRAConfig

_QWEN = dict(rope_theta=1_000_000.0, max_position_embeddings=32768, attention_bias=True)
TEXT_MODELS = {
    # Real Qwen2 hyperparameters; "-8L" keeps 7B's layer shapes with 8 of its 28 layers.
    "qwen2-0.5b": TextConfig(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2,
                             intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, **_QWEN),
    "qwen2-1.5b": TextConfig(hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2,
                             intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, **_QWEN),
    "qwen2-7b-8L": TextConfig(hidden_size=3584, num_layers=8, num_heads=28, num_kv_heads=4,
                              intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False, **_QWEN),
    # CPU smoke tests: a 1,000-row vocabulary keeps init and compile short.
    "tiny-text": TextConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=128, vocab_size=1000, tie_word_embeddings=True, **_QWEN),
}


def model_config(model: str):
    """The family config of a shape's model: a text-only OneVision config for TEXT_MODELS keys,
    else a preset of any family ("NAME-8L": preset NAME with 8 LLM layers; "tiny-video": the
    OneVision tiny preset with a 1,000-row vocabulary)."""
    if model in TEXT_MODELS:
        return get_preset("tiny").replace(vision=None, text=TEXT_MODELS[model])
    if model == "tiny-video":
        base = get_preset("tiny")
        return base.replace(text=dataclasses.replace(base.text, vocab_size=1000),
                            image_token_index=998, video_token_index=999)
    if model.endswith("-8L"):
        base = get_preset(model[:-3])
        return base.replace(text=dataclasses.replace(base.text, num_layers=8))
    return get_preset(model)


@dataclasses.dataclass(frozen=True)
class StepShape:
    name: str
    model: str  # TEXT_MODELS key or a preset of any family (see model_config)
    pairs: int
    response: int  # tokens per response (static length)
    remat: bool = False
    seq: int = 0  # LLM-only: tokens per sequence (prompt + response)
    frames: int = 0  # video pairs: frames per video
    prompt_text: int = 0  # video pairs: text tokens of the prompt besides the video
    lora_rank: int = 0  # > 0: LoRA adapters of this rank (alpha 2r) train, the base is frozen

    @property
    def is_video(self) -> bool:
        return self.frames > 0

    def config(self):
        config = model_config(self.model)
        if self.lora_rank:
            config = config.replace(lora=LoRAConfig(rank=self.lora_rank, alpha=2.0 * self.lora_rank))
        return config

    def prompt_len(self) -> int:
        if self.is_video:
            return self.prompt_text + num_video_tokens(self.config(), self.frames)
        return self.seq - self.response

    def seq_len(self) -> int:
        """Tokens of one naive sequence (prompt + response), as the peer counts them."""
        return self.prompt_len() + self.response


FULL_STEP_SHAPES: List[StepShape] = [
    StepShape("qwen2-0.5b 2x4096", "qwen2-0.5b", pairs=2, seq=4096, response=512),
    StepShape("qwen2-1.5b 2x4096", "qwen2-1.5b", pairs=2, seq=4096, response=512),
    StepShape("qwen2-1.5b 1x12288 remat", "qwen2-1.5b", pairs=1, seq=12288, response=512, remat=True),
    StepShape("qwen2-7b-8L 1x8192 remat", "qwen2-7b-8L", pairs=1, seq=8192, response=512, remat=True),
    StepShape("llava-ov-qwen2-0.5b 16f", "llava-ov-qwen2-0.5b", pairs=1, frames=16, prompt_text=64, response=256),
    StepShape("llava-ov-qwen2-0.5b 32f", "llava-ov-qwen2-0.5b", pairs=1, frames=32, prompt_text=64, response=256),
    StepShape("llava-video-qwen2-7b-8L 32f remat", "llava-video-qwen2-7b-8L", pairs=1, frames=32,
              prompt_text=64, response=256, remat=True),
    # LLaVA-NeXT-Video-7B (CLIP-L/336, 144 tokens per frame, Llama-2-7B cut to 8 layers).
    StepShape("llava-next-video-7b-8L 16f remat", "llava-next-video-7b-8L", pairs=1, frames=16,
              prompt_text=64, response=256, remat=True),
    # 32 frames at 448 x 448: 16 x 16 x 16 = 4,096 video tokens (Qwen2.5-VL-7B, 8 of 28 layers).
    StepShape("qwen2.5-vl-7b-8L 32f remat", "qwen2.5-vl-7b-8L", pairs=1, frames=32, prompt_text=64,
              response=256, remat=True),
    # LoRA r 64: next to the full-fine-tuning row above, then the full 28-layer 7B models at 16
    # and 32 frames, which must fit one GPU with a bf16 base (full fine-tuning would need ~120 GB).
    StepShape("qwen2.5-vl-7b-8L 32f remat lora64", "qwen2.5-vl-7b-8L", pairs=1, frames=32, prompt_text=64,
              response=256, remat=True, lora_rank=64),
    StepShape("qwen2.5-vl-7b 16f remat lora64", "qwen2.5-vl-7b", pairs=1, frames=16, prompt_text=64,
              response=256, remat=True, lora_rank=64),
    StepShape("qwen2.5-vl-7b 32f remat lora64", "qwen2.5-vl-7b", pairs=1, frames=32, prompt_text=64,
              response=256, remat=True, lora_rank=64),
    StepShape("llava-video-qwen2-7b 32f remat lora64", "llava-video-qwen2-7b", pairs=1, frames=32,
              prompt_text=64, response=256, remat=True, lora_rank=64),
]

TINY_STEP_SHAPES: List[StepShape] = [
    StepShape("tiny-text 2x64", "tiny-text", pairs=2, seq=64, response=16),
    StepShape("tiny-text 1x96 remat", "tiny-text", pairs=1, seq=96, response=16, remat=True),
    StepShape("tiny-video 4f", "tiny-video", pairs=1, frames=4, prompt_text=12, response=8),
    StepShape("tiny-next-video 4f", "llava-next-video-tiny", pairs=1, frames=4, prompt_text=12, response=8),
    StepShape("tiny-qwen2.5-vl 4f", "qwen2.5-vl-tiny", pairs=1, frames=4, prompt_text=12, response=8),
    StepShape("tiny-qwen2.5-vl 4f lora4", "qwen2.5-vl-tiny", pairs=1, frames=4, prompt_text=12, response=8,
              lora_rank=4),
]


def step_shapes(size: str) -> List[StepShape]:
    """Every shape of `size` (full / tiny), of every family named; none is dropped here."""
    if size not in ("full", "tiny"):
        raise ValueError(f"--size {size!r}: expected full or tiny")
    return FULL_STEP_SHAPES if size == "full" else TINY_STEP_SHAPES
