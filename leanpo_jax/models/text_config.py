"""The decoder-only language model's configuration (Qwen2 / Llama architecture), shared by families."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple


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
    # M-RoPE (Qwen2-VL / Qwen2.5-VL): frequencies per position axis (t, h, w), summing to
    # head_dim / 2, e.g. (16, 24, 24); positions are then [B, 3, T]. None = 1-D RoPE.
    mrope_section: Optional[Tuple[int, ...]] = None

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads


ROPE_TYPES = ("default", "linear")
# Text model types this decoder computes: Qwen2 (q/k/v biases), Llama, and the Qwen-VL text
# models (Qwen2 with M-RoPE: `mrope_section` in the rope dict).
_TEXT_KINDS = ("qwen2", "llama", "qwen2_vl_text", "qwen2_5_vl_text")


def rope_from_hf(rope: Optional[dict], where: str) -> float:
    """The linear factor of an HF rope dict (`rope_parameters` or legacy `rope_scaling`, with
    `rope_type` or legacy `type`): 1.0 for default RoPE; any other type is refused by name."""
    rope = dict(rope or {})
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "mrope":  # Qwen-VL's legacy name: default frequencies per position axis
        kind = "default"
    if kind not in ROPE_TYPES:
        raise ValueError(f"{where}: rope type {kind!r} is not supported (supported: {ROPE_TYPES}); "
                         "Llama-3 / YaRN / dynamic scaling change the frequencies per band, which "
                         "this decoder does not implement: use a checkpoint with default or linear RoPE")
    if kind == "default":
        return 1.0
    factor = rope.get("factor")
    if not isinstance(factor, (int, float)) or factor <= 0:
        raise ValueError(f"{where}: linear rope scaling needs a positive 'factor', got {factor!r}")
    return float(factor)


def text_config_from_hf(tc, *, tie: bool, outer_rope: Optional[dict] = None,
                        where: str = "config.json") -> TextConfig:
    """TextConfig of a transformers Qwen2Config / LlamaConfig. RoPE theta and scaling come
    from v5 `rope_parameters` (or legacy `rope_theta` / `rope_scaling`); `outer_rope`: a
    rope dict found outside the text config (some conversions write it at the top level),
    used when the text config itself has default RoPE."""
    kind = getattr(tc, "model_type", "")
    if kind not in _TEXT_KINDS:
        raise ValueError(f"{where}: text model_type {kind!r} is not supported ({', '.join(_TEXT_KINDS)})")
    rope = dict(getattr(tc, "rope_parameters", None) or getattr(tc, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(tc, "rope_theta", None))
    factor = rope_from_hf(rope, where + " (text rope_parameters)")
    if factor == 1.0 and outer_rope:
        factor = rope_from_hf(outer_rope, where + " (top-level rope_scaling)")
    if theta is None or getattr(tc, "hidden_act", "silu") != "silu" or getattr(tc, "mlp_bias", False):
        raise ValueError(f"{where}: unsupported text config: rope_theta {theta}, hidden_act "
                         f"{getattr(tc, 'hidden_act', None)}, mlp_bias {getattr(tc, 'mlp_bias', None)} "
                         "(need a rope_theta, silu and no mlp bias)")
    heads = tc.num_attention_heads
    head_dim = getattr(tc, "head_dim", None)
    return TextConfig(
        vocab_size=tc.vocab_size, hidden_size=tc.hidden_size,
        intermediate_size=tc.intermediate_size, num_layers=tc.num_hidden_layers, num_heads=heads,
        num_kv_heads=getattr(tc, "num_key_value_heads", None) or heads,
        head_dim=None if head_dim in (None, tc.hidden_size // heads) else int(head_dim),
        rope_theta=float(theta), rms_norm_eps=float(tc.rms_norm_eps),
        attention_bias=kind != "llama" or bool(getattr(tc, "attention_bias", False)),
        tie_word_embeddings=bool(tie), max_position_embeddings=tc.max_position_embeddings,
        rope_linear_factor=factor,
        mrope_section=tuple(int(x) for x in rope["mrope_section"]) if rope.get("mrope_section") else None)


def hf_text_kwargs(t: TextConfig) -> dict:
    """Keyword arguments of transformers' Qwen2Config / LlamaConfig for `t` (rope included)."""
    rope = {"rope_type": "default", "rope_theta": t.rope_theta}
    if t.rope_linear_factor != 1.0:
        rope = {"rope_type": "linear", "factor": t.rope_linear_factor, "rope_theta": t.rope_theta}
    if t.mrope_section is not None:
        rope["mrope_section"] = list(t.mrope_section)
    kw = dict(vocab_size=t.vocab_size, hidden_size=t.hidden_size, hidden_act="silu",
              intermediate_size=t.intermediate_size, num_hidden_layers=t.num_layers,
              num_attention_heads=t.num_heads, num_key_value_heads=t.num_kv_heads,
              rms_norm_eps=t.rms_norm_eps, max_position_embeddings=t.max_position_embeddings,
              tie_word_embeddings=t.tie_word_embeddings, rope_parameters=rope)
    if t.head_dim is not None:
        kw["head_dim"] = t.head_dim
    return kw
