"""The root of every configuration, its blocks (each key declared once) and the start checks.

A training config (configs/*.py `get_config()`) is one ConfigDict:
    seed, total_steps, num_steps, model, loss, optimizer, train, data, eval, probe, logging,
    checkpoint, mesh, distributed (and generate, read by python -m leanpo_jax.generate)
`SCHEMA` declares it (config_schema.Block): LOSS lives in train/step.py (defaults read from the
signatures in losses.py), OPTIMIZER in train/state.py, DATA in data/config.py, GENERATE in
generate/config.py, MESH and DISTRIBUTED in config_schema.py, the other blocks below.
`validate(config, num_devices, process_count)` rejects unknown keys (naming the nearest known
one), invalid values and invalid combinations at start with a message naming the key(s) and
the fix; the trainer calls it before touching data.
"""

from __future__ import annotations

import math

import ml_collections

from leanpo_jax.config_schema import DISTRIBUTED, MESH, Block, Field
from leanpo_jax.data.config import DATA, check_data_combinations
from leanpo_jax.eval.config import BENCHMARK
from leanpo_jax.generate.config import GENERATE
from leanpo_jax.train.mesh import mesh_shape
from leanpo_jax.train.state import DEFAULT_FROZEN, OPTIMIZER
from leanpo_jax.train.step import LAYOUTS, LOSS

# Keys a rerun on an existing workdir may change; anything else must equal the checkpoint's.
# Where the processes meet and which one this is are launch details (every process but 0
# differs from the saved process_id; a relaunch may get another port); num_processes stays
# fixed, since each host's data shard and saved iterator state depend on it.
# The skip budget may be raised to continue a run that stopped for skipped records.
RESUMABLE_KEYS = ("num_steps", "logging", "distributed.coordinator_address",
                  "distributed.process_id", "distributed.auto", "data.max_skipped_fraction",
                  "data.skip_check_min_records")
DTYPES = ("auto", "float32", "bfloat16")

LORA = Block(
    "LoRA adapters on the language model (models/lora.py); rank 0 = full fine-tuning",
    rank=Field(0, "Adapter rank r (0 = off: the modules of model.frozen_modules train in full)", rule=">= 0"),
    alpha=Field(16.0, "scale = alpha / r (alpha / sqrt(r) with use_rslora)", rule="> 0"),
    dropout=Field(0.0, "Dropout rate on each adapter's input (train steps only, as PEFT's lora_dropout)", rule="in [0, 1)"),
    use_rslora=Field(False, "Rank-stabilised scale alpha / sqrt(r)"),
    target_modules=Field("", 'PEFT semantics: "" = every linear layer of the language model; a comma '
                         'list of module names ("q_proj,v_proj", matching a module name\'s last parts); '
                         'or a regex (any of ^$*+?()[]|\\) re.fullmatch-ed against the whole HF module name '
                         "(transformers 5 in memory, e.g. model.language_model.layers.0.self_attn.q_proj)"),
    base_dtype=Field("auto", 'The frozen base weights\' dtype: "auto" (bfloat16 on GPU/TPU, float32 on CPU); the '
                     "adapters and their optimizer state are float32 whatever it is", choices=DTYPES),
    init_from=Field("", 'PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to start '
                    "the adapters from, for the base at model.init_from; its r / alpha / targets are used "
                    '(model.lora.rank 0 or equal); "" = fresh adapters'),
)
MODEL = Block(
    "the Video-LLM",
    preset=Field("tiny", "Preset name (used when model.init_from is empty): tiny, demo, "
                 "llava-ov-qwen2-0.5b, llava-video-qwen2-7b"),
    init_from=Field("", "HF folder to start from; the checkpoint then decides the family, video "
                    "geometry, template and (unless data.tokenizer is set) the tokenizer; "
                    "model.preset is ignored"),
    dtype=Field("auto", 'Compute dtype: "auto" (bfloat16 on GPU/TPU, float32 on CPU); trainable '
                "master params and the optimizer state are always float32", choices=DTYPES),
    attention_impl=Field("auto", 'Attention kernel: "auto" (cuDNN on GPU, XLA elsewhere) | "xla" | '
                         '"cudnn"', choices=("auto", "xla", "cudnn", None)),
    remat=Field(False, "Recompute each decoder layer in the backward pass (saves activation memory)"),
    frozen_modules=Field(DEFAULT_FROZEN, "Top-level modules kept frozen (paper: the LLM trains, "
                         "tower and projector do not)"),
    vocab_size=Field(0, "Override the preset's vocabulary rows (0 = keep); must cover the "
                     "tokenizer's ids", rule=">= 0"),
    lora=LORA,
)
TRAIN = Block(
    "the step",
    layout=Field("shared", '"shared" (video + prompt once per pair, responses over its K/V) | '
                 '"naive" (duplicated, as other trainers do; for comparison)', choices=LAYOUTS),
    chunk_size=Field(128, "Response positions per LM-head chunk (the [T, V] logits are never "
                     "materialised)", rule=">= 1"),
    grad_accum_steps=Field(1, "Micro-batches per step (divides the per-device batch); exact "
                           "(sum, count) weighting", rule=">= 1"),
    max_consecutive_skips=Field(3, "Stop after this many non-finite (skipped) updates in a row; "
                                "the last good checkpoint is kept", rule=">= 1"),
    peak_tflops=Field(0.0, "bf16 matmul peak per device in TFLOP/s for MFU; 0 = from the device "
                      "kind (H100/H200 ~800 measured; unknown kinds and CPU: MFU null)", rule=">= 0"),
)
EVAL = Block(
    "held-out evaluation",
    pairs=Field("", 'Held-out pairs JSONL ("" = no eval); rows in metrics.jsonl are prefixed "eval/"'),
    every=Field(50, "Evaluate every N steps and at the last step", rule=">= 1"),
    benchmark=BENCHMARK,
)
PROBE = Block(
    "likelihood probe",
    pairs=Field("", "Fixed pairs JSONL scored for clean likelihood curves (\"\" = none); rows "
                'prefixed "probe/" (summed and average log-probs of chosen and rejected)'),
    every=Field(10, "Score every k steps, at step 0 and at the last step", rule=">= 1"),
)
LOGGING = Block(
    "metrics output",
    log_every=Field(10, "Write a metrics.jsonl row (and TensorBoard scalars) every N steps and at "
                    "the end", rule=">= 1"),
    tensorboard=Field(True, "TensorBoard event files under WORKDIR/tensorboard (tensorboardX)"),
    progress_bar=Field(True, "tqdm progress bar on process 0"),
)
CHECKPOINT = Block(
    "checkpoints and export",
    every=Field(500, "Save every N steps; always at the last step and on SIGTERM", rule=">= 1"),
    max_to_keep=Field(2, "Checkpoints kept", rule=">= 1"),
    async_save=Field(True, "Write checkpoints in the background (Orbax async); waited for before exit"),
    export_hf=Field(True, "Export the whole model as HF safetensors to WORKDIR/hf at the end of training"),
)
SCHEMA = Block(
    "a configuration file",
    seed=Field(0, "Seed of the random init (when model.init_from is empty) and of the step rng"),
    total_steps=Field(-1, "Steps of the learning-rate schedule; -1 = one pass of the data "
                      "(data.num_epochs epochs)", rule=">= 1 or -1"),
    num_steps=Field(-1, "Where this invocation stops (<= total_steps); -1 = total_steps; a rerun "
                    "on the same workdir with a larger value continues from the latest checkpoint",
                    rule=">= 1 or -1"),
    model=MODEL, loss=LOSS, optimizer=OPTIMIZER, train=TRAIN, data=DATA, eval=EVAL, probe=PROBE,
    logging=LOGGING, checkpoint=CHECKPOINT, mesh=MESH, distributed=DISTRIBUTED, generate=GENERATE,
)


def training_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """Every block with its defaults (SCHEMA; no generate block); configs/*.py start from this."""
    config = SCHEMA.to_config_dict()
    config.model.preset = preset
    return config


def paper_video_config(preset: str) -> ml_collections.ConfigDict:
    """The paper's LeanPO recipe for a Video-LLM preset on accelerators (docs/loss.md §2.5, §6):
    the loss and optimizer defaults (β 2, γ 0.5, α 0.1, λ_sft 0.5, lr 5e-7 linear with 10%
    warmup, weight decay 0) plus 16 frames, remat, 8 pairs per host, paper lengths."""
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


def validate(config: ml_collections.ConfigDict, *, num_devices: int, process_count: int = 1) -> None:
    """Raises ValueError naming the key(s) of the first unknown key (and the nearest known one),
    invalid value or invalid combination."""
    SCHEMA.validate(config)
    check_combinations(config, num_devices=num_devices, process_count=process_count)


def check_combinations(config: ml_collections.ConfigDict, *, num_devices: int, process_count: int = 1) -> None:
    """The rules across keys (each key's own type and range is SCHEMA's)."""
    check_data_combinations(config.data)
    name = config.loss.name
    if config.data.triplets and name != "sft":
        _fail("data.triplets", config.data.triplets,
              f"triplets hold no rejected answer, so they only train loss.name='sft' (got "
              f"{name!r}); set --config.loss.name=sft or use data.pairs")
    if config.data.triplets and config.data.pairs:
        _fail("data.pairs", config.data.pairs, "set either data.pairs or data.triplets, not both")
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
    bench = config.eval.benchmark
    if int(bench.every):
        if not bench.task or not bench.data:
            _fail("eval.benchmark.every", bench.every, "needs eval.benchmark.task and eval.benchmark.data "
                  "(the benchmark file); set them or set every to 0")
        if process_count > 1:
            _fail("eval.benchmark.every", bench.every, f"the in-training benchmark runs on one process (this run "
                  f"has {process_count}); set it to 0 and run leanpo-eval on the exported model")
    local_rows = global_batch // data_parallel
    accum = config.train.grad_accum_steps
    if int(config.data.batch_size) % accum or local_rows % accum and local_rows >= accum:
        _fail("train.grad_accum_steps", accum,
              f"must divide data.batch_size={config.data.batch_size} (and the per-device rows "
              f"{local_rows}); choose a divisor")
