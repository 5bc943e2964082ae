"""The decoder-only language model's configuration (Qwen2 / Llama architecture), shared by families."""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Qwen2 / Llama-architecture decoder."""

    vocab_size: int = 151936
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_layers: int = 24
    num_heads: int = 14
    num_kv_heads: int = 2
    head_dim: Optional[int] = None  # None: hidden_size // num_heads
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    attention_bias: bool = True  # Qwen2: q/k/v bias; Llama: none
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 32768
    # Linear RoPE scaling (rope_type "linear"): positions are divided by this factor before the
    # angles are formed (LLaVA-NeXT-Video's Vicuna: 2.0). 1.0 = plain RoPE.
    rope_linear_factor: float = 1.0

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads
