"""Preference-optimisation losses for LeanPO and its reference objectives, in pure JAX.

Other codebases import this module on its own: it depends on jax and the standard library only.
Every function is jit/vmap/grad-safe and computes in float32 whatever the input dtype.
Conventions: `labels[b, t]` is the token that position t predicts (already shifted), `mask` is
1 on response tokens and 0 elsewhere; "average" log-probs are per-sequence token means.
"""

from __future__ import annotations

import functools
from typing import Dict, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array
Metrics = Dict[str, Tuple[Array, Array]]

SMOOTHING_FORMS = ("code", "symmetric")
DPO_KINDS = ("sigmoid", "ipo", "hinge")


def _f32(x) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


def _check_pair_shapes(name_a: str, a: Array, name_b: str, b: Array) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{name_a} has shape {jnp.shape(a)} but {name_b} has shape {jnp.shape(b)}: "
            "pass one value per pair for both (the same batch size)."
        )
    if jnp.ndim(a) != 1:
        raise ValueError(f"{name_a} must be a vector [B] of per-sequence values, got shape {jnp.shape(a)}")


def _check_token_shapes(labels: Array, mask: Array, leading: Tuple[int, ...], what: str) -> None:
    if jnp.shape(labels) != leading or jnp.shape(mask) != leading:
        raise ValueError(
            f"labels {jnp.shape(labels)} and mask {jnp.shape(mask)} must both have the shape "
            f"[B, T] = {leading} of {what}."
        )


def _token_logps(logits: Array, labels: Array) -> Array:
    """log softmax(logits)[label] in f32: logit[label] − logsumexp(logits)."""
    logits = _f32(logits)
    log_norm = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    return picked - log_norm


def sequence_logps(logits: Array, labels: Array, mask: Array) -> Tuple[Array, Array]:
    """Σ_t mask·log softmax(logits_t)[labels_t] and Σ_t mask, per row.

    logits [B, T, V], labels [B, T] int, mask [B, T] -> (sum_logps [B] f32, n_tokens [B] f32).
    Labels under mask 0 may hold anything (e.g. −100): they are never gathered.
    """
    if jnp.ndim(logits) != 3:
        raise ValueError(f"logits must be [B, T, V], got shape {jnp.shape(logits)}")
    _check_token_shapes(labels, mask, tuple(jnp.shape(logits)[:2]), "the logits")
    mask = _f32(mask)
    safe_labels = jnp.where(mask > 0, labels, 0).astype(jnp.int32)
    token_logps = _token_logps(logits, safe_labels) * mask
    return token_logps.sum(axis=-1), mask.sum(axis=-1)


def response_logps(
    hidden: Array,
    lm_head_kernel: Array,
    labels: Array,
    mask: Array,
    *,
    chunk_size: int = 128,
) -> Tuple[Array, Array]:
    """`sequence_logps(hidden @ lm_head_kernel, labels, mask)` without a [B, T, V] tensor.

    hidden [B, T, D], lm_head_kernel [D, V]. The sequence is split into chunks of `chunk_size`
    positions scanned one at a time; each chunk body is rematerialised (`jax.checkpoint`) so the
    backward pass also holds one chunk's [B, chunk, V] logits at a time. Logits and logsumexp in
    f32 (bf16 inputs multiply with f32 accumulation).
    """
    if jnp.ndim(hidden) != 3 or jnp.ndim(lm_head_kernel) != 2:
        raise ValueError(
            f"hidden must be [B, T, D] and lm_head_kernel [D, V]; got {jnp.shape(hidden)} and "
            f"{jnp.shape(lm_head_kernel)}"
        )
    if hidden.shape[-1] != lm_head_kernel.shape[0]:
        raise ValueError(
            f"hidden width {hidden.shape[-1]} != lm_head_kernel rows {lm_head_kernel.shape[0]}: "
            "the kernel is [D, V] (transpose a torch [V, D] weight)."
        )
    batch, length, width = hidden.shape
    _check_token_shapes(labels, mask, (batch, length), "the hidden states")
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_size = min(chunk_size, length)
    num_chunks = -(-length // chunk_size)
    pad = num_chunks * chunk_size - length

    mask = _f32(mask)
    labels = jnp.where(mask > 0, labels, 0).astype(jnp.int32)
    if pad:
        # Padded positions carry mask 0, so they add nothing to either sum.
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        labels = jnp.pad(labels, ((0, 0), (0, pad)))
        mask = jnp.pad(mask, ((0, 0), (0, pad)))

    def to_chunks(x):
        x = x.reshape((batch, num_chunks, chunk_size) + x.shape[2:])
        return jnp.moveaxis(x, 1, 0)

    @jax.checkpoint
    def chunk_sum(h, y, m):
        logits = jnp.einsum("bcd,dv->bcv", h, lm_head_kernel, preferred_element_type=jnp.float32)
        return (_token_logps(logits, y) * m).sum(axis=-1)

    def body(total, chunk):
        return total + chunk_sum(*chunk), None

    total, _ = jax.lax.scan(
        body, jnp.zeros((batch,), jnp.float32), (to_chunks(hidden), to_chunks(labels), to_chunks(mask))
    )
    return total, mask.sum(axis=-1)


def _preference_aux(beta: float, chosen: Array, rejected: Array, epsilon: Array) -> Dict[str, Array]:
    chosen_rewards = jax.lax.stop_gradient(beta * chosen)
    rejected_rewards = jax.lax.stop_gradient(beta * rejected)
    return {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen > rejected).astype(jnp.float32),
        "smoothing/epsilon": epsilon,
    }


def leanpo_loss(
    chosen_logps: Array,
    rejected_logps: Array,
    *,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.1,
    smoothing_threshold: float = 0.0,
    smoothing_form: str = "code",
) -> Tuple[Array, Dict[str, Array]]:
    """Per-pair LeanPO loss on per-sequence AVERAGE token log-probs.

    Δ = chosen − rejected; ε = label_smoothing if Δ < smoothing_threshold else 0 (no gradient
    through the switch); loss = −(1−ε)·log σ(βΔ − γ) − ε·log σ(s), with s = −βΔ − γ ("code", the
    authors' scripts) or s = −(βΔ − γ) ("symmetric"). Returns (losses [B], aux of [B] arrays).
    """
    _check_pair_shapes("chosen_logps", chosen_logps, "rejected_logps", rejected_logps)
    if smoothing_form not in SMOOTHING_FORMS:
        raise ValueError(f"smoothing_form={smoothing_form!r}; expected one of {SMOOTHING_FORMS}")
    chosen, rejected = _f32(chosen_logps), _f32(rejected_logps)
    delta = chosen - rejected
    epsilon = jnp.where(jax.lax.stop_gradient(delta) < smoothing_threshold, label_smoothing, 0.0)
    epsilon = epsilon.astype(jnp.float32)
    preferred = beta * delta - gamma
    flipped = -beta * delta - gamma if smoothing_form == "code" else -preferred
    # where(): pairs without smoothing must not pick up 0·(−inf) = NaN from a saturated sigmoid.
    smoothing_term = jnp.where(epsilon > 0, epsilon * jax.nn.log_sigmoid(flipped), 0.0)
    losses = -(1.0 - epsilon) * jax.nn.log_sigmoid(preferred) - smoothing_term
    return losses, _preference_aux(beta, chosen, rejected, epsilon)


def simpo_loss(
    chosen_logps: Array,
    rejected_logps: Array,
    *,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
) -> Tuple[Array, Dict[str, Array]]:
    """Per-pair SimPO loss on AVERAGE log-probs with static smoothing ε for every pair.

    loss = −(1−ε)·log σ(βΔ − γ) − ε·log σ(−(βΔ − γ)), Δ = chosen − rejected.
    """
    _check_pair_shapes("chosen_logps", chosen_logps, "rejected_logps", rejected_logps)
    chosen, rejected = _f32(chosen_logps), _f32(rejected_logps)
    z = beta * (chosen - rejected) - gamma
    epsilon = jnp.full(z.shape, label_smoothing, jnp.float32)
    smoothing_term = jnp.where(epsilon > 0, epsilon * jax.nn.log_sigmoid(-z), 0.0)
    losses = -(1.0 - epsilon) * jax.nn.log_sigmoid(z) - smoothing_term
    return losses, _preference_aux(beta, chosen, rejected, epsilon)


def dpo_loss(
    policy_chosen: Array,
    policy_rejected: Array,
    ref_chosen: Array,
    ref_rejected: Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    kind: str = "sigmoid",
    chosen_n_tokens: Array | None = None,
    rejected_n_tokens: Array | None = None,
) -> Tuple[Array, Dict[str, Array]]:
    """Per-pair DPO-family loss on SUMMED log-probs of policy and reference.

    h = (π_c − ref_c) − (π_r − ref_r). sigmoid: −(1−ε)·log σ(βh) − ε·log σ(−βh) (cDPO);
    hinge: max(0, 1 − βh); ipo: (h̄ − 1/(2β))² with h̄ = (π_c − ref_c)/|y_c| − (π_r − ref_r)/|y_r|,
    the per-token mean log-ratios of TRL and the IPO authors, when `chosen_n_tokens` and
    `rejected_n_tokens` are given (without them h̄ = h: pass per-token averages yourself).
    The counts change IPO only. Rewards are β·(π − ref) of the inputs as given, for every kind.
    """
    _check_pair_shapes("policy_chosen", policy_chosen, "policy_rejected", policy_rejected)
    _check_pair_shapes("policy_chosen", policy_chosen, "ref_chosen", ref_chosen)
    _check_pair_shapes("policy_chosen", policy_chosen, "ref_rejected", ref_rejected)
    if kind not in DPO_KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {DPO_KINDS}")
    if (chosen_n_tokens is None) != (rejected_n_tokens is None):
        raise ValueError("pass both chosen_n_tokens and rejected_n_tokens, or neither")
    chosen = _f32(policy_chosen) - jax.lax.stop_gradient(_f32(ref_chosen))
    rejected = _f32(policy_rejected) - jax.lax.stop_gradient(_f32(ref_rejected))
    h = chosen - rejected
    if kind == "sigmoid":
        losses = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h)
        if label_smoothing:
            losses = losses - label_smoothing * jax.nn.log_sigmoid(-beta * h)
    elif kind == "ipo":
        if chosen_n_tokens is not None:
            _check_pair_shapes("policy_chosen", policy_chosen, "chosen_n_tokens", chosen_n_tokens)
            _check_pair_shapes("policy_chosen", policy_chosen, "rejected_n_tokens", rejected_n_tokens)
            # Summed log-ratios grow with the response length while the target 1/(2β) does not.
            h = average_logps(chosen, chosen_n_tokens) - average_logps(rejected, rejected_n_tokens)
        losses = jnp.square(h - 1.0 / (2.0 * beta))
    else:
        losses = jax.nn.relu(1.0 - beta * h)
    epsilon = jnp.full(h.shape, label_smoothing if kind == "sigmoid" else 0.0, jnp.float32)
    return losses, _preference_aux(beta, chosen, rejected, epsilon)


def sft_loss(sum_logps: Array, n_tokens: Array) -> Array:
    """Token-mean negative log-likelihood over the batch: −Σ_b sum_logps_b / Σ_b n_tokens_b."""
    _check_pair_shapes("sum_logps", sum_logps, "n_tokens", n_tokens)
    return -_f32(sum_logps).sum() / jnp.maximum(_f32(n_tokens).sum(), 1.0)


def average_logps(sum_logps: Array, n_tokens: Array) -> Array:
    """Per-sequence token mean Σ log p / |y| (an empty response averages to 0)."""
    return _f32(sum_logps) / jnp.maximum(_f32(n_tokens), 1.0)


def leanpo_objective(
    chosen_sum_logps: Array,
    chosen_n_tokens: Array,
    rejected_sum_logps: Array,
    rejected_n_tokens: Array,
    *,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.1,
    smoothing_threshold: float = 0.0,
    smoothing_form: str = "code",
    sft_weight: float = 0.5,
    pair_weights: Array | None = None,
    num_pairs: Array | None = None,
    num_chosen_tokens: Array | None = None,
) -> Tuple[Array, Metrics]:
    """L = Σ_b w_b·ℓ_LeanPO,b / N_pairs + sft_weight · (−Σ_b w_b·Σ log π(y_w,b)) / N_tokens.

    Inputs are SUMMED response log-probs and token counts per sequence. `pair_weights` (1/0)
    drops padding pairs. `num_pairs` / `num_chosen_tokens` override the local denominators with
    global ones, so that summing gradients over micro-batches (or hosts) equals the full-batch
    gradient exactly. Every metric is a (sum, count) pair: reduce with `reduce_metrics`.
    """
    _check_pair_shapes("chosen_sum_logps", chosen_sum_logps, "rejected_sum_logps", rejected_sum_logps)
    _check_pair_shapes("chosen_sum_logps", chosen_sum_logps, "chosen_n_tokens", chosen_n_tokens)
    _check_pair_shapes("rejected_sum_logps", rejected_sum_logps, "rejected_n_tokens", rejected_n_tokens)
    chosen_sum, rejected_sum = _f32(chosen_sum_logps), _f32(rejected_sum_logps)
    chosen_n, rejected_n = _f32(chosen_n_tokens), _f32(rejected_n_tokens)
    if pair_weights is None:
        weights = jnp.ones_like(chosen_sum)
    else:
        _check_pair_shapes("chosen_sum_logps", chosen_sum_logps, "pair_weights", pair_weights)
        weights = _f32(pair_weights)
    chosen_avg = average_logps(chosen_sum, chosen_n)
    rejected_avg = average_logps(rejected_sum, rejected_n)
    losses, aux = leanpo_loss(
        chosen_avg, rejected_avg, beta=beta, gamma=gamma, label_smoothing=label_smoothing,
        smoothing_threshold=smoothing_threshold, smoothing_form=smoothing_form,
    )
    local_pairs = weights.sum()
    local_tokens = (weights * chosen_n).sum()
    pair_denominator = jnp.maximum(_f32(local_pairs if num_pairs is None else num_pairs), 1.0)
    token_denominator = jnp.maximum(
        _f32(local_tokens if num_chosen_tokens is None else num_chosen_tokens), 1.0
    )
    preference_sum = (weights * losses).sum()
    nll_sum = -(weights * chosen_sum).sum()
    total = preference_sum / pair_denominator + sft_weight * nll_sum / token_denominator

    def per_pair(values: Array) -> Tuple[Array, Array]:
        return (weights * jax.lax.stop_gradient(values)).sum(), local_pairs

    metrics: Metrics = {
        "loss/preference": per_pair(losses),
        "loss/sft": (jax.lax.stop_gradient(nll_sum), local_tokens),
        "logps/chosen": per_pair(chosen_sum),
        "logps/rejected": per_pair(rejected_sum),
        "logps/chosen_avg": per_pair(chosen_avg),
        "logps/rejected_avg": per_pair(rejected_avg),
        "smoothing/active": per_pair((aux["smoothing/epsilon"] > 0).astype(jnp.float32)),
        "smoothing/epsilon": per_pair(aux["smoothing/epsilon"]),
    }
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        metrics[name] = per_pair(aux[name])
    return total, metrics


def sum_metrics(*metric_dicts: Metrics) -> Metrics:
    """Adds (sum, count) metrics from micro-batches or hosts; exact for any split."""
    names = metric_dicts[0].keys()
    return {
        name: (
            functools.reduce(jnp.add, (m[name][0] for m in metric_dicts)),
            functools.reduce(jnp.add, (m[name][1] for m in metric_dicts)),
        )
        for name in names
    }


def reduce_metrics(metrics: Metrics) -> Dict[str, Array]:
    """(sum, count) -> sum / count per metric (0 where the count is 0)."""
    return {
        name: jnp.where(count > 0, total / jnp.maximum(count, 1e-30), 0.0)
        for name, (total, count) in metrics.items()
    }
