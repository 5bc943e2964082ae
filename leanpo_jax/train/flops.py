"""Model FLOPs of one train step for the layout actually run (for MFU), and device peaks.

Counting (matmuls only, 2 FLOPs per multiply-add; remat recompute NOT counted):
  LLM, per token through a layer stack:  2·N_layers_matmul forward, ×3 with the backward
  attention scores + values per query:   4·L·d_attn·(keys it sees), ×3 with the backward
  LM head: 2·d·V per response position (chunked; only there), ×3 with the backward
  vision tower + projector per video:    the family's `vision_flops` (forward), forward only
                                         when frozen, ×3 when trained
Shared layout per pair: the prompt (P tokens, causal: P²/2 key visits) once; each of the g
responses (R tokens) over P prompt keys + its own causal R²/2. Naive: g sequences of P + R
tokens, causal, and the video encoded g times. Static (padded) shapes, as the step runs them.
"""

from __future__ import annotations

from typing import Optional

from leanpo_jax.models import family_of

# bf16 dense matmul peaks (TFLOP/s per device). H100/H200: measured on the project's GPU
# machine (~800, below the 989 datasheet figure); TPUs: datasheet values.
PEAK_TFLOPS = {"h100": 800.0, "h200": 800.0, "a100": 312.0, "tpu v4": 275.0, "tpu v5 lite": 197.0,
               "tpu v5e": 197.0, "tpu v5p": 459.0, "tpu v6": 918.0}


def device_peak_tflops(device_kind: str) -> Optional[float]:
    """The table's peak for a `jax.Device.device_kind` (case-insensitive substring), else None."""
    kind = device_kind.lower()
    for key, value in PEAK_TFLOPS.items():
        if key in kind:
            return value
    return None


def _layer_matmul_params(config) -> int:
    t = config.text
    hd = t.resolved_head_dim
    attn = t.hidden_size * hd * (t.num_heads * 2 + t.num_kv_heads * 2)
    mlp = 3 * t.hidden_size * t.intermediate_size
    return t.num_layers * (attn + mlp)


def _attention(config, key_visits: float) -> float:
    t = config.text
    return 4.0 * t.num_layers * t.num_heads * t.resolved_head_dim * key_visits


def step_flops(config, *, pairs: int, prompt_len: int, response_len: int,
               num_frames: int = 0, responses_per_pair: int = 2, layout: str = "shared",
               train_vision: bool = False, frame_size=None) -> float:
    """Model FLOPs (forward + backward) of one train step over `pairs` pairs (module docstring);
    `frame_size`: a video bucket's (H, W) other than the model's own (families that take several)."""
    g, p, r = responses_per_pair, prompt_len, response_len
    dense = 2.0 * _layer_matmul_params(config)
    head = 2.0 * config.text.hidden_size * config.text.vocab_size * g * r
    if layout == "shared":
        tokens = p + g * r
        visits = p * (p + 1) / 2 + g * (r * p + r * (r + 1) / 2)
        videos = 1
    else:
        tokens = g * (p + r)
        visits = g * (p + r) * (p + r + 1) / 2
        videos = g
    llm = 3.0 * (dense * tokens + _attention(config, visits) + head)
    vision = 0.0
    if num_frames and family_of(config).interface(config).has_video:
        sized = {} if frame_size is None else {"size": tuple(frame_size)}
        vision = videos * family_of(config).vision_flops(config, num_frames, **sized) * (3.0 if train_vision else 1.0)
    return pairs * (llm + vision)


def batch_step_flops(config, batch_shapes: dict, *, layout: str,
                     train_vision: bool = False, responses_per_pair: int = 2) -> float:
    """`step_flops` from a batch's field shapes ({name: shape})."""
    pairs, prompt_len = batch_shapes["prompt_ids"][:2]
    response_len = batch_shapes["chosen_ids"][1]
    interface = family_of(config).interface(config)  # the seam's word, not a config field
    frames = batch_shapes["frames"][1] if "frames" in batch_shapes and interface.has_video else 0
    size = None
    if frames:
        size = tuple(batch_shapes["frames"][2:4])
        if size == tuple(interface.frames.size):
            size = None
            assert interface.video_tokens(frames) <= prompt_len
        # else: a video bucket of its own (data.video_buckets), counted at its size
    return step_flops(config, pairs=pairs, prompt_len=prompt_len, response_len=response_len,
                      num_frames=frames, responses_per_pair=responses_per_pair, layout=layout,
                      train_vision=train_vision, frame_size=size)
