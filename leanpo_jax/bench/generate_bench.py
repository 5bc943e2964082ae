"""Generation throughput of `generate.Sampler`: the prefill and the decode loop, timed apart.

Random weights, noise frames, `batch` prompts of (video + `prompt_text`) tokens, k samples per
prompt from one prefill, no stop ids (every row decodes `new_tokens`). Rows:
  prefill  tokens/s = batch · prompt tokens / prefill seconds (the video encoded separately)
  decode   tokens/s = batch · k · new_tokens / decode seconds
  encode   frames/s of the vision tower + connector
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from leanpo_jax.bench.timing import median_time, peak_bytes, resolve_attention


@dataclasses.dataclass(frozen=True)
class GenerateShape:
    name: str
    model: str
    frames: int
    prompt_text: int
    batch: int
    samples: int
    new_tokens: int


FULL = GenerateShape("llava-ov-qwen2-0.5b 32f", "llava-ov-qwen2-0.5b", frames=32, prompt_text=64,
                     batch=4, samples=4, new_tokens=256)
TINY = GenerateShape("tiny-video 4f", "tiny-video", frames=4, prompt_text=12, batch=2, samples=2, new_tokens=8)


def run_generate(shape: GenerateShape, *, dtype: str, attention, steps: int, warmup: int) -> list:
    """-> rows for encode, prefill and decode (see the module docstring)."""
    from leanpo_jax.bench.shapes import model_config
    from leanpo_jax.bench.step_bench import token_id_limit
    from leanpo_jax.generate.sampler import Sampler, SamplingConfig
    from leanpo_jax.models import build_model, family_of

    config = model_config(shape.model).replace(dtype=dtype, attention_impl=resolve_attention(attention))
    model = build_model(config, seed=0)
    cfg = SamplingConfig(max_new_tokens=shape.new_tokens, num_samples=shape.samples, stop_ids=(),
                         vocab_limit=token_id_limit(config))
    sampler = Sampler(model, cfg)
    rng = np.random.default_rng(0)
    interface = family_of(config).interface(config)  # any family: its placeholder and frame size
    n = interface.video_tokens(shape.frames)
    prompt_len = n + shape.prompt_text
    ids = rng.integers(1, token_id_limit(config), (shape.batch, prompt_len), dtype=np.int32)
    ids[:, 10:10 + n] = interface.video_token_index
    mask = np.ones_like(ids)
    h, w = interface.frames.size
    frames = jax.device_put(rng.uniform(-1, 1, (shape.batch, shape.frames, h, w, 3)).astype(np.float32))
    common = dict(what="generate", name=shape.name, layout="kv-cache", impl="leanpo_jax", dtype=dtype,
                  batch=shape.batch, samples=shape.samples, prompt_len=prompt_len,
                  new_tokens=shape.new_tokens, frames=shape.frames)

    t = time.perf_counter()
    embeds = jax.block_until_ready(sampler.encode(frames))
    encode_compile = time.perf_counter() - t
    encode_s, _ = median_time(lambda: sampler.encode(frames), steps=steps, warmup=warmup)
    t = time.perf_counter()
    ds = jax.block_until_ready(sampler.prefill(ids, mask, video_embeds=embeds))
    prefill_compile = time.perf_counter() - t
    prefill_s, _ = median_time(lambda: sampler.prefill(ids, mask, video_embeds=embeds), steps=steps, warmup=warmup)
    t = time.perf_counter()
    out = jax.block_until_ready(sampler.decode(ds))
    decode_compile = time.perf_counter() - t
    decode_s, _ = median_time(lambda: sampler.decode(ds), steps=steps, warmup=warmup)
    lengths = np.asarray(jax.device_get(out[2]))
    peak, source = peak_bytes()
    rows_out = shape.batch * shape.samples
    return [
        dict(common, phase="encode", step_s=encode_s, compile_s=encode_compile,
             frames_per_s=shape.batch * shape.frames / encode_s, pairs_per_s=None, tokens_per_s=None,
             peak_bytes=peak, peak_source=source),
        dict(common, phase="prefill", step_s=prefill_s, compile_s=prefill_compile,
             tokens_per_s=shape.batch * prompt_len / prefill_s, pairs_per_s=None,
             peak_bytes=peak, peak_source=source),
        dict(common, phase="decode", step_s=decode_s, compile_s=decode_compile,
             tokens_per_s=float(lengths.sum()) / decode_s, pairs_per_s=None,
             decoded_tokens=int(lengths.sum()), rows=rows_out, peak_bytes=peak, peak_source=source),
    ]
