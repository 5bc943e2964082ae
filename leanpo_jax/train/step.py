"""The training step: objectives over pair log-probs, exact gradient accumulation, the update.

    model_def, state = init_state(model, opt_cfg, seed)
    step = make_train_step(model_def, step_cfg, opt_cfg)    # jitted, state donated
    state, metrics = step(state, batch)                     # metrics: name -> (sum, count)

Batch (leanpo_jax.data.batch): frames uint8 [B, F, H, W, 3]; prompt_ids / prompt_mask [B, P]
RIGHT-padded, each row holding exactly the video's placeholder ids; prompt_lengths [B];
optional prompt_positions; chosen_ids / chosen_mask / rejected_ids / rejected_mask [B, R]
(right-padded); pair_weight [B] (0 = padding pair); for dpo also ref_chosen_logps /
ref_rejected_logps [B] (summed). Log-probs: `models.logps.pair_logps` (shared prefix or naive
layout, `train.layout`).

Objectives (cfg.loss.name), each `Σ_b w_b·ℓ_b / N_pairs` (+ the SFT term), w = pair_weight:
  leanpo  losses.leanpo_objective (average log-probs, SFT on chosen over N_tokens)
  simpo   losses.simpo_loss on average log-probs
  dpo     losses.dpo_loss on summed log-probs against batch ref_*_logps (dpo_kind "ipo":
          per-token means of policy and reference log-ratios, as TRL)
  sft     −Σ_b w_b·Σ log π(y_w,b) / N_tokens (chosen only)
N_pairs = Σ w and N_tokens = Σ w·|y_w| are computed on the WHOLE batch before it is split into
`grad_accum_steps` micro-batches, so the sum of micro-batch gradients is the full-batch gradient.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from leanpo_jax import losses
from leanpo_jax.config_schema import Block, Field, default_of
from leanpo_jax.models.lora import adapter_dropout
from leanpo_jax.models.logps import LAYOUTS, normalize_batch, pair_logps  # noqa: F401  (the step's layouts)
from leanpo_jax.train.state import ModelDef, TrainState, cfg_get, make_optimizer, make_schedule
from leanpo_jax.train.state import merge_model, skip_counts

LOSS_NAMES = ("leanpo", "simpo", "dpo", "sft")
# The `loss` block of every config: the paper's LeanPO defaults, read from the loss functions.
LOSS = Block(
    "the preference objective",
    name=Field("leanpo", 'Objective: "leanpo" | "simpo" (static smoothing) | "dpo" (needs reference '
               'log-probs) | "sft"', choices=LOSS_NAMES),
    beta=Field(default_of(losses.leanpo_loss, "beta"),
               "β: reward scale, reward = β · average token log-prob of the response", rule="> 0"),
    gamma=Field(default_of(losses.leanpo_loss, "gamma"),
                "γ: target reward margin inside the Bradley–Terry sigmoid (TRL's simpo_gamma, "
                "not γ/β)", rule=">= 0"),
    label_smoothing=Field(default_of(losses.leanpo_loss, "label_smoothing"),
                          "α: ε for pairs the policy ranks the wrong way (dynamic smoothing); "
                          'static ε of every pair for "simpo" and "dpo"', rule="in [0, 1)"),
    smoothing_threshold=Field(default_of(losses.leanpo_loss, "smoothing_threshold"),
                              "d: ε = α where Δ = avg_logp(chosen) − avg_logp(rejected) < d "
                              "(paper: 0; d > 0 did worse)"),
    smoothing_form=Field(default_of(losses.leanpo_loss, "smoothing_form"),
                         '"code" (γ inside both sigmoids, the authors\' scripts) | "symmetric" '
                         "(σ(−(βΔ − γ)))", choices=losses.SMOOTHING_FORMS),
    sft_weight=Field(default_of(losses.leanpo_objective, "sft_weight"),
                     "λ_sft: weight of the winner's token-mean NLL (paper: 0.5; 0.1 in one "
                     "Qwen2-VL run)", rule=">= 0"),
    dpo_kind=Field(default_of(losses.dpo_loss, "kind"), 'DPO only: "sigmoid" | "hinge" (summed '
                   'log-ratios) | "ipo" (per-token mean log-ratios, as TRL)', choices=losses.DPO_KINDS),
)


def global_counts(batch) -> Tuple[jax.Array, jax.Array]:
    """(N_pairs, N_tokens) = (Σ_b w_b, Σ_b w_b·|y_w,b|) of a whole batch (before splitting)."""
    weights = batch["pair_weight"].astype(jnp.float32)
    chosen_tokens = batch["chosen_mask"].astype(jnp.float32).sum(axis=-1)
    return weights.sum(), (weights * chosen_tokens).sum()


def _loss_cfg(cfg):
    section = cfg_get(cfg, "loss", {})
    return {k: cfg_get(section, k, v) for k, v in LOSS.defaults().items()}


def objective(logps, batch, cfg, *, num_pairs=None, num_chosen_tokens=None):
    """Loss from pair log-probs -> (scalar, metrics of (sum, count) pairs). See module docstring."""
    lc = _loss_cfg(cfg)
    name = lc["name"]
    weights = batch["pair_weight"].astype(jnp.float32)
    if num_pairs is None or num_chosen_tokens is None:
        num_pairs, num_chosen_tokens = global_counts(batch)
    if name == "leanpo":
        return losses.leanpo_objective(
            logps["chosen"], logps["chosen_tokens"], logps["rejected"], logps["rejected_tokens"],
            beta=lc["beta"], gamma=lc["gamma"], label_smoothing=lc["label_smoothing"],
            smoothing_threshold=lc["smoothing_threshold"], smoothing_form=lc["smoothing_form"],
            sft_weight=lc["sft_weight"], pair_weights=weights, num_pairs=num_pairs,
            num_chosen_tokens=num_chosen_tokens,
        )
    local_pairs = weights.sum()
    sg = jax.lax.stop_gradient

    def per_pair(values):
        return (weights * sg(values)).sum(), local_pairs

    chosen_avg = losses.average_logps(logps["chosen"], logps["chosen_tokens"])
    metrics = {"logps/chosen": per_pair(logps["chosen"]), "logps/chosen_avg": per_pair(chosen_avg)}
    nll_sum = -(weights * logps["chosen"]).sum()
    metrics["loss/sft"] = (sg(nll_sum), (weights * logps["chosen_tokens"]).sum())
    if name == "sft":  # SFT reads the chosen (or triplet answer) responses only
        return nll_sum / jnp.maximum(num_chosen_tokens, 1.0), metrics
    rejected_avg = losses.average_logps(logps["rejected"], logps["rejected_tokens"])
    metrics["logps/rejected"] = per_pair(logps["rejected"])
    metrics["logps/rejected_avg"] = per_pair(rejected_avg)
    if name == "simpo":
        per, aux = losses.simpo_loss(chosen_avg, rejected_avg, beta=lc["beta"], gamma=lc["gamma"],
                                     label_smoothing=lc["label_smoothing"])
    elif name == "dpo":
        missing = [k for k in ("ref_chosen_logps", "ref_rejected_logps") if k not in batch]
        if missing:
            raise ValueError(f"loss.name='dpo' needs reference log-probs in the batch; missing {missing}")
        # The cached reference sums cover the same response tokens (same tokenisation, part of
        # the cache key), so one count per response averages policy and reference alike (IPO).
        per, aux = losses.dpo_loss(logps["chosen"], logps["rejected"], batch["ref_chosen_logps"],
                                   batch["ref_rejected_logps"], beta=lc["beta"],
                                   label_smoothing=lc["label_smoothing"], kind=lc["dpo_kind"],
                                   chosen_n_tokens=logps["chosen_tokens"],
                                   rejected_n_tokens=logps["rejected_tokens"])
    else:
        raise ValueError(f"loss.name={name!r}; expected one of {LOSS_NAMES}")
    metrics["loss/preference"] = per_pair(per)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        metrics[key] = per_pair(aux[key])
    metrics["smoothing/active"] = per_pair((aux["smoothing/epsilon"] > 0).astype(jnp.float32))
    return (weights * per).sum() / jnp.maximum(num_pairs, 1.0), metrics


def loss_fn(trainable, frozen, batch, *, model_def: ModelDef, cfg, num_pairs=None,
            num_chosen_tokens=None, dropout_key=None):
    """(trainable, frozen, normalised batch) -> (loss, metrics). Differentiate w.r.t. trainable.
    `dropout_key`: the LoRA adapters' dropout key (models/lora.py), None = no dropout."""
    model = merge_model(model_def, trainable, frozen)
    sft_only = _loss_cfg(cfg)["name"] == "sft"
    with contextlib.ExitStack() as stack:
        if dropout_key is not None:
            stack.enter_context(adapter_dropout(dropout_key))
        logps = pair_logps(
            model, batch, layout=cfg_get(cfg, "layout", "shared"),
            chunk_size=int(cfg_get(cfg, "chunk_size", 128)), train_vision=model_def.trains_vision,
            names=("chosen",) if sft_only else ("chosen", "rejected"),
        )
    return objective(logps, batch, cfg, num_pairs=num_pairs, num_chosen_tokens=num_chosen_tokens)


def compute_grads(trainable, frozen, batch, *, model_def: ModelDef, cfg, dropout_key=None):
    """-> (loss, grads (f32, like trainable), metrics): exact over cfg.grad_accum_steps splits.

    The batch is split into k contiguous micro-batches scanned one at a time; each uses the
    whole batch's N_pairs / N_tokens, so Σ_i loss_i and Σ_i grad_i equal the full-batch values
    (without adapter dropout: micro-batch i drops with fold_in(dropout_key, i)).
    """
    batch = normalize_batch(batch, model_def.config)
    num_pairs, num_tokens = global_counts(batch)
    k = int(cfg_get(cfg, "grad_accum_steps", 1))
    size = batch["pair_weight"].shape[0]
    if size % k:
        raise ValueError(f"batch size {size} is not divisible by grad_accum_steps={k}")
    grad_fn = jax.value_and_grad(
        functools.partial(loss_fn, model_def=model_def, cfg=cfg, num_pairs=num_pairs,
                          num_chosen_tokens=num_tokens), has_aux=True)
    if k == 1:
        (loss, metrics), grads = grad_fn(trainable, frozen, batch, dropout_key=dropout_key)
        return loss, grads, metrics
    micro = jax.tree.map(lambda x: x.reshape((k, size // k) + x.shape[1:]), batch)

    def body(carry, xs):
        mb, i = xs
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
        (loss, metrics), grads = grad_fn(trainable, frozen, mb, dropout_key=key)
        total_loss, total_grads, total_metrics = carry
        return (total_loss + loss, jax.tree.map(jnp.add, total_grads, grads),
                losses.sum_metrics(total_metrics, metrics)), None

    # Zero carry of the right structure (one traced body, not a separate first micro-batch).
    shapes = jax.eval_shape(grad_fn, trainable, frozen, jax.tree.map(lambda x: x[0], micro))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (_, metrics0), grads0 = zeros
    (loss, grads, metrics), _ = jax.lax.scan(body, (zeros[0][0], grads0, metrics0), (micro, jnp.arange(k)))
    return loss, grads, metrics


def train_step(state: TrainState, batch, *, model_def: ModelDef, cfg, opt_cfg) -> Tuple[TrainState, Any]:
    """Pure step: grads over trainable params, the optax update, (sum, count) metrics."""
    trainable, frozen = state.params["trainable"], state.params["frozen"]
    # This step's adapter-dropout key (used only when model.lora.dropout > 0): from the state,
    # so a resumed run draws the same masks.
    dropout_key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 1)
    loss, grads, metrics = compute_grads(trainable, frozen, batch, model_def=model_def, cfg=cfg,
                                         dropout_key=dropout_key)
    tx = make_optimizer(opt_cfg)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    consecutive, total = skip_counts(opt_state)
    one = jnp.ones((), jnp.float32)
    # A step whose pairs were all skipped has no loss to report: count 0, so it is left out of
    # the logged means (and logged as null when a whole window is empty), never a false 0.
    # (!= 0, not > 0: a NaN pair weight must still report its NaN loss.)
    has_pairs = (global_counts(batch)[0] != 0).astype(jnp.float32)
    metrics = dict(metrics)
    metrics["loss"] = (loss, has_pairs)  # global denominators: the summed micro-losses are the loss
    metrics["optim/grad_norm"] = (optax.tree.norm(grads), has_pairs)
    metrics["steps/empty"] = (1.0 - has_pairs, one)
    metrics["optim/lr"] = (make_schedule(opt_cfg)(state.step), one)
    metrics["optim/skipped"] = (consecutive.astype(jnp.float32), one)
    metrics["optim/skipped_total"] = (total.astype(jnp.float32), one)
    new_state = state.replace(
        params={"trainable": trainable, "frozen": frozen}, opt_state=opt_state,
        step=state.step + 1, rng=jax.random.fold_in(state.rng, state.step),
    )
    return new_state, metrics


def make_train_step(model_def: ModelDef, cfg, opt_cfg, *, in_shardings=None, out_shardings=None):
    """jax.jit(train_step) with the state donated; shardings are passed through when given."""
    kwargs = {}
    if in_shardings is not None:
        kwargs["in_shardings"] = in_shardings
    if out_shardings is not None:
        kwargs["out_shardings"] = out_shardings
    fn = functools.partial(train_step, model_def=model_def, cfg=cfg, opt_cfg=opt_cfg)
    return jax.jit(fn, donate_argnums=0, **kwargs)
