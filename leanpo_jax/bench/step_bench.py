"""leanpo_jax's real train step (`leanpo_jax.train.step`) on one benchmark shape and layout.

Random weights (seeded), random token ids, uint8 noise frames; the optimiser is the trainer's
(AdamW + clipping + non-finite skip) and the tower + connector are frozen as in the paper. The
row's model FLOPs are those of the layout actually run (`train.flops.step_flops`), so the
shared layout's MFU counts the prompt once. No grain/av/imageio import on this path: it runs
from a checkout on machines that lack them.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from leanpo_jax.bench.shapes import StepShape
from leanpo_jax.bench.timing import median_time, peak_bytes, peak_bytes_of, resolve_attention
from leanpo_jax.data.batch import make_batch
from leanpo_jax.models import family_of
from leanpo_jax.train import flops as flops_lib


def token_id_limit(config) -> int:
    """Random text ids are drawn below this: under the image/video placeholder ids (a stray
    placeholder would change the video-token count) and the last rows of the vocabulary."""
    limit = config.text.vocab_size - 8
    video = family_of(config).interface(config).video_token_index
    if video is not None:
        # Not every family config has an image placeholder; LLaVA ones put it next to the video's.
        image = getattr(config, "image_token_index", None)
        limit = min(limit, video, limit if image is None else image)
    return limit


def random_batch(shape: StepShape, config, seed: int = 0) -> dict:
    """The train step's batch (leanpo_jax.data.batch) for `shape`, full masks; frames sized by
    the family's frame policy, placeholders and their count from its data interface."""
    rng = np.random.default_rng(seed)
    pairs, p, r = shape.pairs, shape.prompt_len(), shape.response
    high = token_id_limit(config)
    prompt = rng.integers(1, high, (pairs, p), dtype=np.int32)
    fields = dict(
        prompt_ids=prompt,
        prompt_mask=np.ones((pairs, p), np.int32),
        prompt_lengths=np.full((pairs,), p, np.int32),
        chosen_ids=rng.integers(1, high, (pairs, r), dtype=np.int32),
        chosen_mask=np.ones((pairs, r), np.int32),
        rejected_ids=rng.integers(1, high, (pairs, r), dtype=np.int32),
        rejected_mask=np.ones((pairs, r), np.int32),
        pair_weight=np.ones((pairs,), np.float32),
    )
    if shape.is_video:
        interface = family_of(config).interface(config)
        n = interface.video_tokens(shape.frames)
        start = min(10, shape.prompt_text)  # like a chat template: a few text tokens first
        prompt[:, start:start + n] = interface.video_token_index
        h, w = interface.frames.size
        fields["frames"] = rng.integers(0, 256, (pairs, shape.frames, h, w, 3), dtype=np.uint8)
        if interface.positions_fn is not None:  # M-RoPE families: the host-side position table
            fields["prompt_positions"] = np.stack([interface.positions_fn(row) for row in prompt]).astype(np.int32)
    return make_batch("pairs", **fields)


def run_step(shape: StepShape, layout: str, *, dtype: str, attention, steps: int, warmup: int,
             compile_only: bool = False) -> dict:
    """Times `steps` train steps (median) -> a result row (see leanpo_jax.bench.__main__).
    `compile_only`: lower and compile from abstract shapes only (no weights, no step run): the
    row then has peak_bytes (XLA's buffer-assignment estimate on this backend), compile_s and
    trainable_params, and no timings."""
    from leanpo_jax.models import build_model
    from leanpo_jax.train.state import init_state
    from leanpo_jax.train.step import make_train_step

    config = shape.config().replace(dtype=dtype, attention_impl=resolve_attention(attention), remat=shape.remat)
    row = dict(what="step", name=shape.name, layout=layout, impl="leanpo_jax", remat=shape.remat,
               pairs=shape.pairs, seq=shape.seq_len(), prompt_len=shape.prompt_len(),
               response=shape.response, frames=shape.frames, dtype=dtype, lora_rank=shape.lora_rank)
    opt_cfg = {"learning_rate": 1e-6, "total_steps": 1000, "warmup_ratio": 0.0}
    host_batch = random_batch(shape, config)
    built = {}

    def build_state():
        # LoRA: the frozen base in the compute dtype (bf16 at full size), as the trainer's
        # model.lora.base_dtype "auto" stores it on accelerators.
        built["model_def"], state = init_state(build_model(config, seed=0), opt_cfg, 0,
                                               frozen_dtype=dtype if shape.lora_rank else None)
        return state

    if compile_only:  # abstract shapes only: nothing allocated (a 7B model on a laptop)
        state = jax.eval_shape(build_state)
        batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host_batch)
    else:
        state, batch = build_state(), jax.device_put(host_batch)
    model_def = built["model_def"]
    row["trainable_params"] = int(sum(x.size for x in jax.tree.leaves(state.params["trainable"])))
    step = make_train_step(model_def, {"layout": layout}, opt_cfg)
    t = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    row["compile_s"] = time.perf_counter() - t
    row["model_flops"] = flops_lib.step_flops(
        config, pairs=shape.pairs, prompt_len=shape.prompt_len(), response_len=shape.response,
        num_frames=shape.frames, layout=layout)
    if compile_only:
        row["peak_bytes"], row["peak_source"] = peak_bytes_of(compiled), "xla_estimate"
        row["step_s"] = row["tokens_per_s"] = row["pairs_per_s"] = None
        return row

    losses = []
    holder = [state]

    def one():
        holder[0], metrics = compiled(holder[0], batch)
        losses.append(metrics["loss"][0])
        return metrics

    row["step_s"], row["step_times"] = median_time(one, steps=steps, warmup=warmup)
    losses = [float(x) for x in jax.device_get(losses)]
    row["loss_first"], row["loss_last"] = losses[0], losses[-1]
    row["pairs_per_s"] = shape.pairs / row["step_s"]
    row["tokens_per_s"] = 2 * shape.pairs * shape.seq_len() / row["step_s"]
    row["peak_bytes"], row["peak_source"] = peak_bytes(compiled)
    return row
