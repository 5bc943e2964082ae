"""The training blocks of every configuration, each key with its range, and the start checks.

A training config (configs/*.py `get_config()`) is one ConfigDict:
    seed, total_steps, num_steps, model, loss, optimizer, train, data, eval, probe, logging,
    checkpoint, mesh, distributed
`validate(config, num_devices, process_count)` rejects invalid values and combinations at start
with a message naming the key(s) and the fix; the trainer calls it before touching data.
"""

from __future__ import annotations

import math
from typing import Optional

import ml_collections

from leanpo_jax.data.config import data_config
from leanpo_jax.train.sharding import distributed_config, mesh_config, mesh_shape
from leanpo_jax.train.state import SCHEDULES
from leanpo_jax.train.step import LAYOUTS, LOSS_NAMES

# Keys a rerun on an existing workdir may change; anything else must equal the checkpoint's.
RESUMABLE_KEYS = ("num_steps", "logging")
DTYPES = ("auto", "float32", "bfloat16")


def loss_block() -> ml_collections.ConfigDict:
    """The preference objective (shared/method.md §2); paper defaults for LeanPO."""
    loss = ml_collections.ConfigDict()
    # Objective: "leanpo" | "simpo" (static smoothing) | "dpo" (needs reference log-probs) | "sft".
    loss.name = "leanpo"
    # β > 0: reward scale, reward = β · average token log-prob of the response.
    loss.beta = 2.0
    # γ ≥ 0: target reward margin inside the Bradley–Terry sigmoid.
    loss.gamma = 0.5
    # α in [0, 1): ε for pairs the policy currently ranks the wrong way (dynamic smoothing);
    # for "simpo" and "dpo" it is the static smoothing applied to every pair.
    loss.label_smoothing = 0.1
    # d: ε = α where Δ = avg_logp(chosen) − avg_logp(rejected) < d (paper: 0; d > 0 did worse).
    loss.smoothing_threshold = 0.0
    # "code" (γ inside both sigmoids, the authors' scripts) | "symmetric" (σ(−(βΔ − γ))).
    loss.smoothing_form = "code"
    # λ_sft ≥ 0: weight of the winner's token-mean NLL (paper: 0.5; 0.1 in one Qwen2-VL run).
    loss.sft_weight = 0.5
    # DPO only: "sigmoid" | "ipo" | "hinge".
    loss.dpo_kind = "sigmoid"
    return loss


def model_block(preset: str = "tiny") -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    # Preset name (leanpo_jax.models.get_preset): "tiny", "llava-ov-qwen2-0.5b", "llava-video-qwen2-7b".
    m.preset = preset
    # HF folder (config.json + safetensors) to start from; "" = seeded random init of the preset.
    m.init_from = ""
    # Compute dtype: "auto" (bfloat16 on GPU/TPU, float32 on CPU) | "float32" | "bfloat16".
    # Trainable master params and the optimizer state are always float32.
    m.dtype = "auto"
    # Attention kernel: "auto" (cuDNN on GPU, XLA elsewhere) | "xla" | "cudnn".
    m.attention_impl = "auto"
    # Recompute each decoder layer in the backward pass (saves activation memory).
    m.remat = False
    # Top-level modules kept frozen (paper: the LLM trains, tower and projector do not).
    m.frozen_modules = ("vision_tower", "connector")
    # Override the preset's vocabulary rows (0 = keep); must cover the tokenizer's ids.
    m.vocab_size = 0
    return m


def optimizer_block() -> ml_collections.ConfigDict:
    o = ml_collections.ConfigDict()
    # Peak learning rate > 0 (paper: 5e-7 for 7B models).
    o.learning_rate = 5e-7
    # After warmup: "linear" (to 0 at total_steps) | "cosine" (to 0) | "constant".
    o.schedule = "linear"
    # Warmup steps = ceil(warmup_ratio * total_steps), linear from 0; in [0, 1).
    o.warmup_ratio = 0.1
    # Decoupled (AdamW) weight decay >= 0 (paper: 0).
    o.weight_decay = 0.0
    # Global-norm clipping threshold > 0; <= 0 disables clipping.
    o.max_grad_norm = 1.0
    # Adam moments and epsilon.
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-8
    return o


def train_block() -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    # "shared" (video + prompt once per pair, responses over its K/V) | "naive" (duplicated,
    # as other trainers do; for comparison).
    t.layout = "shared"
    # Response positions per LM-head chunk (the [T, V] logits are never materialised); >= 1.
    t.chunk_size = 128
    # Micro-batches per step (>= 1, divides the per-device batch); exact (sum, count) weighting.
    t.grad_accum_steps = 1
    # Stop after this many non-finite (skipped) updates in a row (>= 1); the last good
    # checkpoint is kept.
    t.max_consecutive_skips = 3
    # bf16 matmul peak per device in TFLOP/s for MFU; 0 = from the device kind (H100/H200 ~800
    # measured; unknown kinds and CPU: MFU is reported as null).
    t.peak_tflops = 0.0
    return t


def eval_block() -> ml_collections.ConfigDict:
    e = ml_collections.ConfigDict()
    # Held-out pairs JSONL ("" = no eval); rows in metrics.jsonl are prefixed "eval/".
    e.pairs = ""
    # Evaluate every N steps (>= 1) and at the last step.
    e.every = 50
    return e


def probe_block() -> ml_collections.ConfigDict:
    p = ml_collections.ConfigDict()
    # Fixed pairs JSONL scored every k steps for clean likelihood curves ("" = none); rows
    # prefixed "probe/" (summed and average log-probs of chosen and rejected).
    p.pairs = ""
    # Score every k steps (>= 1), at step 0 and at the last step.
    p.every = 10
    return p


def logging_block() -> ml_collections.ConfigDict:
    g = ml_collections.ConfigDict()
    # Write a metrics.jsonl row (and TensorBoard scalars) every N steps (>= 1) and at the end.
    g.log_every = 10
    # TensorBoard event files under WORKDIR/tensorboard (tensorboardX).
    g.tensorboard = True
    # tqdm progress bar on process 0.
    g.progress_bar = True
    return g


def checkpoint_block() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Save every N steps (>= 1); always at the last step and on SIGTERM.
    c.every = 500
    # Checkpoints kept (>= 1).
    c.max_to_keep = 2
    # Write checkpoints in the background (Orbax async); waited for before exit.
    c.async_save = True
    # Export the whole model as HF safetensors to WORKDIR/hf at the end of training.
    c.export_hf = True
    return c


def training_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """Every block with its defaults; configs/*.py start from this and override."""
    config = ml_collections.ConfigDict()
    # Seed of the random init (when model.init_from is empty) and of the step rng.
    config.seed = 0
    # Steps of the learning-rate schedule; -1 = one pass of the data (data.num_epochs epochs).
    config.total_steps = -1
    # Where this invocation stops (<= total_steps); -1 = total_steps. Rerunning on the same
    # workdir with a larger value continues from the latest checkpoint.
    config.num_steps = -1
    config.model = model_block(preset)
    config.loss = loss_block()
    config.optimizer = optimizer_block()
    config.train = train_block()
    config.data = data_config()
    config.data.model_preset = preset
    # SFT only (loss.name="sft"): triplets JSONL {id, video, prompt, answer}; used instead of
    # data.pairs and trains on the GT answers.
    config.data.triplets = ""
    # With no data file set: generate this many synthetic shape videos (+ 8 held out) into
    # WORKDIR/synthetic on the first run and train on them (0 = a data file is required).
    config.data.synthetic = 0
    config.eval = eval_block()
    config.probe = probe_block()
    config.logging = logging_block()
    config.checkpoint = checkpoint_block()
    config.mesh = mesh_config()
    config.distributed = distributed_config()
    return config


def paper_video_config(preset: str) -> ml_collections.ConfigDict:
    """The paper's LeanPO recipe for a Video-LLM preset on accelerators (shared/method.md §2,
    §4): the loss and optimizer defaults above (β 2, γ 0.5, α 0.1, λ_sft 0.5, lr 5e-7 linear
    with 10% warmup, weight decay 0) plus 16 frames, remat, 8 pairs per host, paper lengths."""
    config = training_config(preset)
    config.model.remat = True
    config.data.num_frames = 16
    config.data.max_prompt_text_tokens = 256
    config.data.response_buckets = (128, 256, 512)
    config.data.max_response_tokens = 512
    # Per host; the global batch is batch_size x processes (8 on one 8-GPU host, as the paper).
    config.data.batch_size = 8
    config.data.num_workers = 2
    config.logging.log_every = 10
    config.checkpoint.every = 200
    return config


def _fail(key: str, value, rule: str):
    raise ValueError(f"config {key}={value!r}: {rule}")


def _positive_int(config, key: str, minimum: int = 1) -> None:
    node = config
    for part in key.split("."):
        node = node[part]
    if not isinstance(node, int) or isinstance(node, bool) or node < minimum:
        _fail(key, node, f"expected an int >= {minimum}")


def validate(config: ml_collections.ConfigDict, *, num_devices: int, process_count: int = 1) -> None:
    """Raises ValueError naming the key(s) of the first invalid value or combination."""
    name = config.loss.name
    if name not in LOSS_NAMES:
        _fail("loss.name", name, f"expected one of {LOSS_NAMES}")
    if config.loss.beta <= 0:
        _fail("loss.beta", config.loss.beta, "expected > 0")
    if not 0 <= config.loss.label_smoothing < 1:
        _fail("loss.label_smoothing", config.loss.label_smoothing, "expected in [0, 1)")
    if config.loss.sft_weight < 0 or config.loss.gamma < 0:
        _fail("loss.sft_weight / loss.gamma", (config.loss.sft_weight, config.loss.gamma),
              "expected >= 0")
    if config.data.triplets and name != "sft":
        _fail("data.triplets", config.data.triplets,
              f"triplets hold no rejected answer, so they only train loss.name='sft' (got "
              f"{name!r}); set --config.loss.name=sft or use data.pairs")
    if config.data.triplets and config.data.pairs:
        _fail("data.pairs", config.data.pairs, "set either data.pairs or data.triplets, not both")
    if config.model.dtype not in DTYPES:
        _fail("model.dtype", config.model.dtype, f"expected one of {DTYPES}")
    if config.model.attention_impl not in ("auto", "xla", "cudnn", None):
        _fail("model.attention_impl", config.model.attention_impl, "expected auto | xla | cudnn")
    if config.train.layout not in LAYOUTS:
        _fail("train.layout", config.train.layout, f"expected one of {LAYOUTS}")
    if config.optimizer.schedule not in SCHEDULES:
        _fail("optimizer.schedule", config.optimizer.schedule, f"expected one of {SCHEDULES}")
    if config.optimizer.learning_rate <= 0:
        _fail("optimizer.learning_rate", config.optimizer.learning_rate, "expected > 0")
    if not 0 <= config.optimizer.warmup_ratio < 1:
        _fail("optimizer.warmup_ratio", config.optimizer.warmup_ratio, "expected in [0, 1)")
    if config.optimizer.weight_decay < 0:
        _fail("optimizer.weight_decay", config.optimizer.weight_decay, "expected >= 0")
    for key in ("train.chunk_size", "train.grad_accum_steps", "train.max_consecutive_skips",
                "eval.every", "probe.every", "logging.log_every", "checkpoint.every",
                "checkpoint.max_to_keep"):
        _positive_int(config, key)
    for key in ("total_steps", "num_steps"):
        value = config[key]
        if not isinstance(value, int) or (value < 1 and value != -1):
            _fail(key, value, "expected an int >= 1, or -1 (see the key's comment)")
    if config.total_steps != -1 and config.num_steps > config.total_steps:
        _fail("num_steps", config.num_steps,
              f"exceeds total_steps={config.total_steps}; raise total_steps (it sets the schedule)")
    sizes = mesh_shape(config, num_devices)  # errors name the mesh.* keys
    data_parallel = sizes["data"] * sizes["fsdp"]
    global_batch = int(config.data.batch_size) * process_count
    if global_batch % data_parallel:
        _fail("data.batch_size", config.data.batch_size,
              f"the global batch {global_batch} (x {process_count} processes) must be divisible "
              f"by the data-parallel size mesh.data*mesh.fsdp = {data_parallel}; use a multiple "
              f"of {data_parallel // math.gcd(data_parallel, process_count)}")
    local_rows = global_batch // data_parallel
    accum = config.train.grad_accum_steps
    if int(config.data.batch_size) % accum or local_rows % accum and local_rows >= accum:
        _fail("train.grad_accum_steps", accum,
              f"must divide data.batch_size={config.data.batch_size} (and the per-device rows "
              f"{local_rows}); choose a divisor")


def resolve_dtype(config: ml_collections.ConfigDict, platform: str) -> str:
    """model.dtype with "auto" resolved: bfloat16 on accelerators, float32 on CPU."""
    if config.model.dtype != "auto":
        return config.model.dtype
    return "float32" if platform == "cpu" else "bfloat16"


def resolve_attention(config: ml_collections.ConfigDict, platform: str) -> Optional[str]:
    """model.attention_impl with "auto" resolved: cuDNN on GPU, XLA elsewhere."""
    impl = config.model.attention_impl
    if impl in ("auto", None):
        return "cudnn" if platform == "gpu" else "xla"
    return impl
