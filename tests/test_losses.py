"""leanpo_jax.losses against independent float64 NumPy references (values, gradients, memory)."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leanpo_jax import losses

RTOL = 1e-6
ATOL = 1e-7  # for values that are exactly or nearly 0, where a relative bound means nothing
GRAD_TOL = 1e-4


# ----------------------------------------------------------------------------- float64 reference
def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def np_leanpo(c, r, beta, gamma, alpha, threshold, form):
    c, r = np.asarray(c, np.float64), np.asarray(r, np.float64)
    delta = c - r
    eps = np.where(delta < threshold, alpha, 0.0)
    flipped = -beta * delta - gamma if form == "code" else -(beta * delta - gamma)
    return -(1 - eps) * np_log_sigmoid(beta * delta - gamma) - eps * np_log_sigmoid(flipped)


def np_simpo(c, r, beta, gamma, eps):
    z = beta * (np.float64(c) - np.float64(r)) - gamma
    return -(1 - eps) * np_log_sigmoid(z) - eps * np_log_sigmoid(-z)


def np_dpo(pc, pr, rc, rr, beta, eps, kind):
    h = (np.float64(pc) - np.float64(rc)) - (np.float64(pr) - np.float64(rr))
    if kind == "sigmoid":
        return -(1 - eps) * np_log_sigmoid(beta * h) - eps * np_log_sigmoid(-beta * h)
    if kind == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    return np.maximum(0.0, 1 - beta * h)


def np_trl_ipo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_mask,
               rejected_mask, beta):
    """TRL DPOTrainer loss_type="ipo" from per-token log-probs [B, T]: each log-ratio is summed
    over its response and divided by that response's token count, then (Δ − 1/(2β))²."""
    def mean_log_ratio(policy, ref, mask):
        return ((policy - ref) * mask).sum(-1) / np.maximum(mask.sum(-1), 1.0)

    delta = (mean_log_ratio(policy_chosen, ref_chosen, chosen_mask)
             - mean_log_ratio(policy_rejected, ref_rejected, rejected_mask))
    return (delta - 1.0 / (2.0 * beta)) ** 2


def np_trl_cpo_simpo(c, r, beta, simpo_gamma, label_smoothing):
    """TRL CPOTrainer loss_type="simpo" on average log-probs: logits = c − r − simpo_gamma/β,
    −(1−ε)·log σ(β·logits) − ε·log σ(−β·logits)."""
    logits = (np.float64(c) - np.float64(r)) - simpo_gamma / beta
    return (-(1 - label_smoothing) * np_log_sigmoid(beta * logits)
            - label_smoothing * np_log_sigmoid(-beta * logits))


def np_log_softmax_pick(logits, labels, mask):
    logits = np.asarray(logits, np.float64)
    log_norm = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, np.where(mask > 0, labels, 0)[..., None], -1)[..., 0]
    return ((picked - log_norm) * mask).sum(-1), mask.sum(-1).astype(np.float64)


def np_objective(cs, cn, rs, rn, beta, gamma, alpha, threshold, form, sft_weight, weights):
    ca, ra = cs / np.maximum(cn, 1), rs / np.maximum(rn, 1)
    pair = np_leanpo(ca, ra, beta, gamma, alpha, threshold, form)
    return (weights * pair).sum() / max(weights.sum(), 1) + sft_weight * (
        -(weights * cs).sum() / max((weights * cn).sum(), 1)
    )


def central_difference(fn, x, h=1e-6):
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = h
        grad[i] = (fn(x + step) - fn(x - step)) / (2 * h)
    return grad


def as_f32_64(x):
    """The float32 value the loss sees, widened for the reference."""
    return np.asarray(np.asarray(x, np.float32), np.float64)


def random_logps(seed, batch, scale=1.5):
    rng = np.random.default_rng(seed)
    return (
        as_f32_64(-np.abs(rng.normal(1.0, scale, batch))),
        as_f32_64(-np.abs(rng.normal(1.0, scale, batch))),
    )


def random_token_pairs(seed, pairs, max_len=24):
    """Per-token log-probs [pairs, max_len] of policy and reference for chosen and rejected, and
    response masks of independent lengths 1..max_len. Values are multiples of 2⁻¹⁰ in (−8, 0]:
    every masked sum is exact in float32, so the loss under test gets exactly the reference's
    inputs."""
    rng = np.random.default_rng(seed)
    positions = np.arange(max_len)[None]
    masks = [(positions < rng.integers(1, max_len + 1, (pairs, 1))).astype(np.float64)
             for _ in range(2)]
    tokens = [-rng.integers(0, 8 * 1024, (pairs, max_len)) / 1024.0 for _ in range(4)]
    return tokens, masks


# ----------------------------------------------------------------------------- LeanPO / SimPO
@pytest.mark.parametrize("batch", [1, 3, 16, 64])
@pytest.mark.parametrize("form", ["code", "symmetric"])
@pytest.mark.parametrize("threshold", [0.0, 0.3, -0.2])
def test_leanpo_matches_float64_reference(batch, form, threshold):
    c, r = random_logps(batch * 7 + len(form), batch)
    got, aux = losses.leanpo_loss(
        jnp.asarray(c, jnp.float32), jnp.asarray(r, jnp.float32), beta=2.0, gamma=0.5,
        label_smoothing=0.1, smoothing_threshold=threshold, smoothing_form=form,
    )
    want = np_leanpo(c, r, 2.0, 0.5, 0.1, threshold, form)
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(aux["smoothing/epsilon"], np.where(c - r < threshold, 0.1, 0.0), rtol=RTOL)
    np.testing.assert_allclose(aux["rewards/chosen"], 2.0 * c, rtol=RTOL)
    np.testing.assert_allclose(aux["rewards/rejected"], 2.0 * r, rtol=RTOL)
    np.testing.assert_allclose(aux["rewards/margins"], 2.0 * (c - r), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(aux["rewards/accuracies"], (c > r).astype(np.float32))


def test_epsilon_switches_exactly_at_the_threshold():
    # Δ = −0.25 exactly representable; thresholds just above, at and below it.
    c = jnp.asarray([-1.25, -1.25, -1.25], jnp.float32)
    r = jnp.asarray([-1.0, -1.0, -1.0], jnp.float32)
    for threshold, expected in [(-0.2, 0.3), (-0.25, 0.0), (-0.3, 0.0)]:
        _, aux = losses.leanpo_loss(c, r, label_smoothing=0.3, smoothing_threshold=threshold)
        np.testing.assert_array_equal(aux["smoothing/epsilon"], np.full(3, expected, np.float32))


def test_exact_tie_has_no_smoothing_at_default_threshold():
    c = jnp.asarray([-0.7, -2.0], jnp.float32)
    got, aux = losses.leanpo_loss(c, c)
    np.testing.assert_array_equal(aux["smoothing/epsilon"], [0.0, 0.0])
    np.testing.assert_allclose(got, -np_log_sigmoid(np.full(2, -0.5)), rtol=RTOL)  # −log σ(−γ)


def test_gamma_sits_inside_both_sigmoids_in_code_form():
    # Δ = −1 < 0: ε = α. code: −0.9·log σ(−2.5) − 0.1·log σ(+2 − 0.5); symmetric: … log σ(2.5).
    c, r = jnp.asarray([-2.0]), jnp.asarray([-1.0])
    code, _ = losses.leanpo_loss(c, r, smoothing_form="code")
    symmetric, _ = losses.leanpo_loss(c, r, smoothing_form="symmetric")
    np.testing.assert_allclose(
        code, -0.9 * np_log_sigmoid(-2.5) - 0.1 * np_log_sigmoid(1.5), rtol=RTOL
    )
    np.testing.assert_allclose(
        symmetric, -0.9 * np_log_sigmoid(-2.5) - 0.1 * np_log_sigmoid(2.5), rtol=RTOL
    )
    assert abs(float(code[0]) - float(symmetric[0])) > 1e-3


@pytest.mark.parametrize("batch", [2, 17])
def test_leanpo_without_smoothing_is_simpo(batch):
    c, r = random_logps(batch, batch)
    leanpo, _ = losses.leanpo_loss(c, r, label_smoothing=0.0)
    simpo, _ = losses.simpo_loss(c, r)
    np.testing.assert_array_equal(leanpo, simpo)
    np.testing.assert_allclose(simpo, np_simpo(c, r, 2.0, 0.5, 0.0), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_simpo_static_smoothing_matches_reference(eps):
    c, r = random_logps(11, 9)
    got, aux = losses.simpo_loss(c, r, beta=2.5, gamma=1.0, label_smoothing=eps)
    np.testing.assert_allclose(got, np_simpo(c, r, 2.5, 1.0, eps), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(aux["smoothing/epsilon"], np.full(9, eps), rtol=RTOL)


def test_extreme_log_probs_stay_finite():
    # Far beyond any real average log-prob: sigmoids saturate at both ends.
    c = jnp.asarray([-1e4, 0.0, -1e4, -1e30, 0.0, -88.0], jnp.float32)
    r = jnp.asarray([0.0, -1e4, -1e4, 0.0, -1e30, -1e-30], jnp.float32)
    for form in ("code", "symmetric"):
        value, grads = jax.value_and_grad(
            lambda a, b: losses.leanpo_loss(a, b, smoothing_form=form)[0].sum(), argnums=(0, 1)
        )(c, r)
        assert np.isfinite(value)
        assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    for form in ("code", "symmetric"):
        got, _ = losses.leanpo_loss(c, r, smoothing_form=form)
        np.testing.assert_allclose(got, np_leanpo(c, r, 2.0, 0.5, 0.1, 0.0, form), rtol=RTOL)
    dpo, _ = losses.dpo_loss(c, r, r, c)
    assert np.isfinite(np.asarray(dpo)).all()


# ----------------------------------------------------------------------------- DPO / SFT
@pytest.mark.parametrize("kind", ["sigmoid", "ipo", "hinge"])
@pytest.mark.parametrize("eps", [0.0, 0.15])
def test_dpo_matches_float64_reference(kind, eps):
    rng = np.random.default_rng(5)
    pc, pr, rc, rr = (as_f32_64(-np.abs(rng.normal(40, 10, 12))) for _ in range(4))
    got, aux = losses.dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=eps, kind=kind)
    np.testing.assert_allclose(got, np_dpo(pc, pr, rc, rr, 0.1, eps, kind), rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(aux["rewards/chosen"], 0.1 * (pc - rc), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(aux["rewards/accuracies"], ((pc - rc) > (pr - rr)).astype(np.float32))


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_ipo_with_token_counts_matches_trl_float64(beta):
    (pc_tok, pr_tok, rc_tok, rr_tok), (chosen_mask, rejected_mask) = random_token_pairs(14, 50)
    pc, pr, rc, rr = ((t * m).sum(-1) for t, m in
                      zip((pc_tok, pr_tok, rc_tok, rr_tok), (chosen_mask, rejected_mask) * 2))
    chosen_n, rejected_n = chosen_mask.sum(-1), rejected_mask.sum(-1)
    got, aux = losses.dpo_loss(pc, pr, rc, rr, beta=beta, kind="ipo",
                               chosen_n_tokens=chosen_n, rejected_n_tokens=rejected_n)
    want = np_trl_ipo(pc_tok, pr_tok, rc_tok, rr_tok, chosen_mask, rejected_mask, beta)
    error = np.abs(np.asarray(got, np.float64) - want)
    print(f"beta={beta}: IPO vs TRL float64, max abs err {error.max():.2e}, "
          f"max rel err {(error / np.abs(want)).max():.2e}, loss range [{want.min():.3g}, {want.max():.3g}]")
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # TRL logs IPO's rewards on the summed log-ratios, as for every other DPO kind.
    np.testing.assert_allclose(aux["rewards/chosen"], beta * (pc - rc), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(aux["rewards/accuracies"], ((pc - rc) > (pr - rr)).astype(np.float32))


def test_token_counts_change_only_ipo():
    rng = np.random.default_rng(8)
    pc, pr, rc, rr = (as_f32_64(-np.abs(rng.normal(40, 10, 6))) for _ in range(4))
    counts = dict(chosen_n_tokens=rng.integers(1, 60, 6), rejected_n_tokens=rng.integers(1, 60, 6))
    for kind in ("sigmoid", "hinge"):
        summed, _ = losses.dpo_loss(pc, pr, rc, rr, label_smoothing=0.1, kind=kind)
        counted, _ = losses.dpo_loss(pc, pr, rc, rr, label_smoothing=0.1, kind=kind, **counts)
        np.testing.assert_array_equal(counted, summed)
    with pytest.raises(ValueError, match="chosen_n_tokens.*rejected_n_tokens"):
        losses.dpo_loss(pc, pr, rc, rr, kind="ipo", chosen_n_tokens=counts["chosen_n_tokens"])


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_gamma_is_trl_simpo_gamma_and_symmetric_smoothing_is_trl_label_smoothing(eps):
    # The mapping docs/loss.md §4.1 states: gamma = simpo_gamma (not simpo_gamma/β); static ε on
    # every pair = label_smoothing; LeanPO reaches it with the symmetric form and ε on every pair.
    c, r = random_logps(31, 50)
    want = np_trl_cpo_simpo(c, r, 2.5, 0.8, eps)
    simpo, _ = losses.simpo_loss(c, r, beta=2.5, gamma=0.8, label_smoothing=eps)
    every_pair, _ = losses.leanpo_loss(c, r, beta=2.5, gamma=0.8, label_smoothing=eps,
                                       smoothing_threshold=np.inf, smoothing_form="symmetric")
    np.testing.assert_allclose(simpo, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(every_pair, want, rtol=RTOL, atol=ATOL)


def test_sft_loss_is_the_token_mean_nll():
    sums = np.asarray([-10.0, -3.0, -7.5])
    counts = np.asarray([5.0, 1.0, 4.0])
    np.testing.assert_allclose(losses.sft_loss(sums, counts), 20.5 / 10.0, rtol=RTOL)


# ----------------------------------------------------------------------------- gradients
def _grad_check(jax_fn, np_fn, *inputs):
    grads = jax.grad(lambda *a: jax_fn(*a), argnums=tuple(range(len(inputs))))(
        *(jnp.asarray(x, jnp.float32) for x in inputs)
    )
    for i, (g, x) in enumerate(zip(grads, inputs)):
        def partial(xi, i=i):
            args = list(inputs)
            args[i] = xi
            return np_fn(*args)

        np.testing.assert_allclose(np.asarray(g), central_difference(partial, x), atol=GRAD_TOL, rtol=GRAD_TOL)


@pytest.mark.parametrize("form", ["code", "symmetric"])
def test_leanpo_gradient_matches_finite_differences(form):
    # Gaps kept ≥ 0.05 from the threshold so the ε switch stays put within the FD step.
    c = np.asarray([-1.0, -2.0, -0.4, -3.0, -1.5])
    r = np.asarray([-1.6, -1.1, -0.3, -2.0, -1.5 + 0.5])
    _grad_check(
        lambda a, b: losses.leanpo_loss(a, b, smoothing_form=form)[0].sum(),
        lambda a, b: np_leanpo(a, b, 2.0, 0.5, 0.1, 0.0, form).sum(), c, r,
    )


def test_simpo_dpo_sft_gradients_match_finite_differences():
    c = np.asarray([-1.0, -2.0, -0.4])
    r = np.asarray([-1.6, -1.1, -0.3])
    _grad_check(
        lambda a, b: losses.simpo_loss(a, b, label_smoothing=0.1)[0].sum(),
        lambda a, b: np_simpo(a, b, 2.0, 0.5, 0.1).sum(), c, r,
    )
    pc, pr = np.asarray([-30.0, -41.0, -12.0]), np.asarray([-35.0, -38.0, -20.0])
    rc, rr = np.asarray([-31.0, -40.0, -13.0]), np.asarray([-33.0, -39.0, -15.0])
    for kind in ("sigmoid", "ipo", "hinge"):
        _grad_check(
            lambda a, b: losses.dpo_loss(a, b, rc, rr, beta=0.1, label_smoothing=0.1, kind=kind)[0].sum(),
            lambda a, b: np_dpo(a, b, rc, rr, 0.1, 0.1, kind).sum(), pc, pr,
        )
    counts = np.asarray([5.0, 2.0, 9.0])
    rejected_counts = np.asarray([3.0, 7.0, 1.0])
    _grad_check(
        lambda a, b: losses.dpo_loss(a, b, rc, rr, beta=0.1, kind="ipo", chosen_n_tokens=counts,
                                     rejected_n_tokens=rejected_counts)[0].sum(),
        lambda a, b: (((a - rc) / counts - (b - rr) / rejected_counts - 5.0) ** 2).sum(), pc, pr,
    )
    _grad_check(lambda s: losses.sft_loss(s, counts), lambda s: -s.sum() / counts.sum(), pc)


# ----------------------------------------------------------------------------- objective
OBJECTIVE_KW = dict(beta=2.0, gamma=0.5, label_smoothing=0.1, smoothing_threshold=0.0,
                    smoothing_form="code", sft_weight=0.5)


def _objective_inputs(seed=3, batch=8):
    rng = np.random.default_rng(seed)
    cn = rng.integers(3, 30, batch).astype(np.float64)
    rn = rng.integers(3, 30, batch).astype(np.float64)
    cs = as_f32_64(-cn * np.abs(rng.normal(1.0, 0.5, batch)))
    rs = as_f32_64(-rn * np.abs(rng.normal(1.0, 0.5, batch)))
    return cs, cn, rs, rn


def test_objective_and_metrics_match_reference():
    cs, cn, rs, rn = _objective_inputs()
    weights = np.asarray([1, 1, 1, 1, 1, 1, 0, 0], np.float64)  # two padding pairs
    total, metrics = losses.leanpo_objective(cs, cn, rs, rn, pair_weights=weights, **OBJECTIVE_KW)
    want = np_objective(cs, cn, rs, rn, 2.0, 0.5, 0.1, 0.0, "code", 0.5, weights)
    np.testing.assert_allclose(total, want, rtol=RTOL)

    reduced = {k: float(v) for k, v in losses.reduce_metrics(metrics).items()}
    ca, ra = cs / cn, rs / rn
    keep = weights > 0
    eps = np.where(ca < ra, 0.1, 0.0)
    expected = {
        "loss/preference": np_leanpo(ca, ra, 2.0, 0.5, 0.1, 0.0, "code")[keep].mean(),
        "loss/sft": -cs[keep].sum() / cn[keep].sum(),
        "logps/chosen": cs[keep].mean(),
        "logps/rejected": rs[keep].mean(),
        "logps/chosen_avg": ca[keep].mean(),
        "logps/rejected_avg": ra[keep].mean(),
        "rewards/chosen": 2 * ca[keep].mean(),
        "rewards/rejected": 2 * ra[keep].mean(),
        "rewards/margins": 2 * (ca - ra)[keep].mean(),
        "rewards/accuracies": (ca > ra)[keep].mean(),
        "smoothing/active": (eps > 0)[keep].mean(),
        "smoothing/epsilon": eps[keep].mean(),
    }
    assert set(reduced) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(reduced[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert float(metrics["loss/sft"][1]) == cn[keep].sum()
    assert float(metrics["logps/chosen"][1]) == keep.sum()


def test_objective_gradient_matches_finite_differences():
    cs, cn, rs, rn = _objective_inputs(seed=4, batch=5)
    ones = np.ones(5)
    _grad_check(
        lambda a, b: losses.leanpo_objective(a, cn, b, rn, **OBJECTIVE_KW)[0],
        lambda a, b: np_objective(a, cn, b, rn, 2.0, 0.5, 0.1, 0.0, "code", 0.5, ones), cs, rs,
    )


def test_micro_batches_with_global_denominators_accumulate_exactly():
    cs, cn, rs, rn = (jnp.asarray(x, jnp.float32) for x in _objective_inputs(seed=9, batch=8))

    def objective(c_sum, r_sum, sl, num_pairs=None, num_tokens=None):
        return losses.leanpo_objective(
            c_sum[sl], cn[sl], r_sum[sl], rn[sl], num_pairs=num_pairs,
            num_chosen_tokens=num_tokens, **OBJECTIVE_KW,
        )

    full_grad = jax.grad(lambda a, b: objective(a, b, slice(None))[0], argnums=(0, 1))(cs, rs)
    full_metrics = objective(cs, rs, slice(None))[1]
    pieces = [slice(0, 3), slice(3, 8)]
    grads = [
        jax.grad(lambda a, b, s=s: objective(a, b, s, 8.0, cn.sum())[0], argnums=(0, 1))(cs, rs)
        for s in pieces
    ]
    for i in range(2):
        np.testing.assert_allclose(grads[0][i] + grads[1][i], full_grad[i], rtol=1e-6, atol=1e-9)
    merged = losses.sum_metrics(*(objective(cs, rs, s)[1] for s in pieces))
    for name, (total, count) in full_metrics.items():
        np.testing.assert_allclose(merged[name][0], total, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(merged[name][1], count)


# ----------------------------------------------------------------------------- token log-probs
def _token_problem(seed, batch=2, length=37, vocab=50, width=16, dtype=np.float32):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(batch, length, width)).astype(dtype)
    kernel = (rng.normal(size=(width, vocab)) / np.sqrt(width)).astype(np.float32)
    labels = rng.integers(0, vocab, (batch, length))
    mask = (rng.random((batch, length)) < 0.6).astype(np.float32)
    labels = np.where(mask > 0, labels, -100)  # ignored positions may carry anything
    return hidden, kernel, labels, mask


def test_sequence_logps_matches_float64_log_softmax():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(3, 11, 29)) * 4).astype(np.float32)
    labels = rng.integers(0, 29, (3, 11))
    mask = (rng.random((3, 11)) < 0.7).astype(np.float32)
    got_sum, got_n = losses.sequence_logps(logits, labels, mask)
    want_sum, want_n = np_log_softmax_pick(logits, labels, mask)
    np.testing.assert_allclose(got_sum, want_sum, rtol=RTOL, atol=1e-5)
    np.testing.assert_array_equal(got_n, want_n)


@pytest.fixture(scope="module")
def chunked_vs_full():
    """Jitted value-and-grad of the chunked and the materialised paths (compiled once per shape)."""

    def full(hidden, kernel, labels, mask):
        logits = jnp.einsum("btd,dv->btv", hidden, kernel, preferred_element_type=jnp.float32)
        total, _ = losses.sequence_logps(logits, labels, mask)
        return (total * jnp.arange(1, total.shape[0] + 1)).sum()

    def chunked(hidden, kernel, labels, mask, chunk_size):
        total, _ = losses.response_logps(hidden, kernel, labels, mask, chunk_size=chunk_size)
        return (total * jnp.arange(1, total.shape[0] + 1)).sum()

    return (
        jax.jit(jax.value_and_grad(full, argnums=(0, 1))),
        jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)), static_argnums=4),
    )


@pytest.mark.parametrize("chunk_size", [1, 8, 37, 10, 64])
def test_response_logps_equals_materialised_logits(chunked_vs_full, chunk_size):
    full, chunked = chunked_vs_full
    hidden, kernel, labels, mask = _token_problem(1)
    (want, want_grads) = full(hidden, kernel, labels, mask)
    (got, got_grads) = chunked(hidden, kernel, labels, mask, chunk_size)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    sums, counts = losses.response_logps(hidden, kernel, labels, mask, chunk_size=chunk_size)
    want_sum, want_n = np_log_softmax_pick(hidden.astype(np.float64) @ kernel, labels, mask)
    np.testing.assert_allclose(sums, want_sum, rtol=1e-5)
    np.testing.assert_array_equal(counts, want_n)


def test_response_logps_bf16_hidden_states(chunked_vs_full):
    # bf16 hidden states multiply with f32 accumulation; against the f32 path on the same bf16
    # values the only difference is summation order: 1e-5 relative on values, 1e-4 on gradients.
    full, chunked = chunked_vs_full
    hidden, kernel, labels, mask = _token_problem(2)
    hidden_bf16 = jnp.asarray(hidden, jnp.bfloat16)
    got, got_grads = chunked(hidden_bf16, kernel, labels, mask, 10)
    want, want_grads = full(hidden_bf16.astype(jnp.float32), kernel, labels, mask)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got_grads[0].dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(got_grads[0], np.float32), want_grads[0], rtol=1e-2, atol=1e-3
    )  # the hidden-state gradient is rounded to bf16 (8 mantissa bits)
    np.testing.assert_allclose(got_grads[1], want_grads[1], rtol=1e-4, atol=1e-5)


def _grad_temp_bytes(batch, length, width, vocab, chunk_size):
    def loss(hidden, kernel, labels, mask):
        return losses.response_logps(hidden, kernel, labels, mask, chunk_size=chunk_size)[0].sum()

    args = (
        jax.ShapeDtypeStruct((batch, length, width), jnp.float32),
        jax.ShapeDtypeStruct((width, vocab), jnp.float32),
        jax.ShapeDtypeStruct((batch, length), jnp.int32),
        jax.ShapeDtypeStruct((batch, length), jnp.float32),
    )
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_response_logps_never_holds_the_full_logits_in_the_backward_pass():
    batch, length, width, vocab = 2, 1024, 32, 2048
    full_logits_bytes = batch * length * vocab * 4
    small = _grad_temp_bytes(batch, length, width, vocab, 32)
    large = _grad_temp_bytes(batch, length, width, vocab, 128)
    assert small < full_logits_bytes / 2, (small, full_logits_bytes)
    assert large < full_logits_bytes / 2, (large, full_logits_bytes)
    assert large > small, (small, large)


# ----------------------------------------------------------------------------- contract
def test_mismatched_batch_sizes_name_both_shapes():
    with pytest.raises(ValueError, match=r"chosen_logps has shape \(3,\) but rejected_logps has shape \(4,\)"):
        losses.leanpo_loss(jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(ValueError, match="ref_rejected"):
        losses.dpo_loss(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(ValueError, match="smoothing_form"):
        losses.leanpo_loss(jnp.zeros(3), jnp.zeros(3), smoothing_form="sym")
    with pytest.raises(ValueError, match="lm_head_kernel"):
        losses.response_logps(jnp.zeros((1, 4, 8)), jnp.zeros((6, 10)), jnp.zeros((1, 4), int), jnp.ones((1, 4)))
    with pytest.raises(ValueError, match=r"labels \(1, 5\)"):
        losses.sequence_logps(jnp.zeros((1, 4, 8)), jnp.zeros((1, 5), int), jnp.ones((1, 4)))


def test_losses_are_vmap_and_jit_safe():
    c, r = random_logps(21, 12)
    c, r = jnp.asarray(c, jnp.float32).reshape(3, 4), jnp.asarray(r, jnp.float32).reshape(3, 4)
    vmapped = jax.jit(jax.vmap(lambda a, b: losses.leanpo_loss(a, b)[0]))(c, r)
    flat, _ = losses.leanpo_loss(c.reshape(-1), r.reshape(-1))
    np.testing.assert_allclose(vmapped.reshape(-1), flat, rtol=RTOL)  # jit fuses: 1 ulp


def test_importing_losses_loads_no_heavy_framework(run_cli):
    probe = (
        "import json, sys; import leanpo_jax.losses; "
        "print(json.dumps([m for m in ('flax', 'optax', 'grain', 'transformers', 'torch', 'orbax') "
        "if m in sys.modules]))"
    )
    proc = run_cli(["-c", probe])
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    assert sys.modules.get("leanpo_jax.losses") is losses
