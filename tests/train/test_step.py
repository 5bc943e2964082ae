"""Training step: shared prefix == naive layout, its FLOPs saving, exact accumulation, updates."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.data.batch import batch_from_rows
from leanpo_jax.models import VideoLLM, get_preset, num_video_tokens
from leanpo_jax.train import state as state_lib
from leanpo_jax.train import step as step_lib

VOCAB = 512
FRAMES = 4


def tiny_config(remat=False):
    config = get_preset("tiny")
    return config.replace(text=dataclasses.replace(config.text, vocab_size=VOCAB), remat=remat)


def make_batch(config, *, prompts, responses, frames=FRAMES, resp_len=6, pad=2, seed=0,
               weights=None):
    """Pipeline-shaped numpy batch: right-padded prompts (text, N placeholders, text), responses."""
    rng = np.random.default_rng(seed)
    n = num_video_tokens(config, frames)
    rows = [np.concatenate([rng.integers(10, VOCAB, a), np.full(n, config.video_token_index),
                            rng.integers(10, VOCAB, b)]) for a, b in prompts]
    chosen, rejected = ([rng.integers(10, VOCAB, lens[k]) for lens in responses] for k in (0, 1))
    s = config.vision.image_size
    return batch_from_rows(
        "pairs", rows, {"chosen": chosen, "rejected": rejected}, prompt_len=max(map(len, rows)) + pad,
        response_len=resp_len, frames=rng.integers(0, 256, (len(rows), frames, s, s, 3)).astype(np.uint8),
        weights=weights)


PAIR_BATCH = dict(prompts=[(3, 4), (1, 1)], responses=[(5, 3), (2, 6)])


@pytest.fixture(scope="module")
def models():
    """Split (model_def, trainable, frozen) of the same weights with remat off and on."""
    out = {}
    for remat in (False, True):
        model = VideoLLM(tiny_config(remat), rngs=nnx.Rngs(0))
        out[remat] = state_lib.split_model(model)
    return out


def _grad_fn(model_def, layout):
    cfg = {"layout": layout, "chunk_size": 4}
    fn = functools.partial(step_lib.loss_fn, model_def=model_def, cfg=cfg)
    return jax.jit(jax.value_and_grad(fn, has_aux=True))


def _rel_err(got, want):
    """max |got − want| / max |want| per leaf; worst leaf."""
    got, want = dict(nnx.to_flat_state(got)), dict(nnx.to_flat_state(want))
    assert got.keys() == want.keys()
    worst = 0.0
    for path in want:
        w, g = np.asarray(want[path][...]), np.asarray(got[path][...])
        worst = max(worst, float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-30)))
    return worst


def test_split_freezes_the_vision_side(models):
    _, trainable, frozen = models[False]
    assert {p[0] for p in dict(nnx.to_flat_state(trainable))} == {"language_model"}
    assert {p[0] for p in dict(nnx.to_flat_state(frozen))} == {"vision_tower", "connector"}


@pytest.mark.parametrize("remat", [False, True])
def test_shared_prefix_equals_naive_layout(models, remat):
    model_def, trainable, frozen = models[remat]
    batch = step_lib.normalize_batch(make_batch(model_def.config, **PAIR_BATCH), model_def.config)
    batch = jax.tree.map(jnp.asarray, batch)
    if not remat:  # the forward log-probs do not depend on remat: compare them once
        def logps(layout):
            model = state_lib.merge_model(model_def, trainable, frozen)
            return jax.jit(functools.partial(step_lib.pair_logps, layout=layout, chunk_size=4))(model, batch)
        shared, naive = logps("shared"), logps("naive")
        for key in ("chosen", "rejected"):
            np.testing.assert_allclose(shared[key], naive[key], rtol=1e-5)
            np.testing.assert_array_equal(shared[key + "_tokens"], naive[key + "_tokens"])
        np.testing.assert_array_equal(shared["chosen_tokens"], [5, 2])
    (loss_s, _), grads_s = _grad_fn(model_def, "shared")(trainable, frozen, batch)
    (loss_n, _), grads_n = _grad_fn(model_def, "naive")(trainable, frozen, batch)
    np.testing.assert_allclose(loss_s, loss_n, rtol=1e-5)
    err = _rel_err(grads_s, grads_n)
    print(f"remat={remat}: loss {float(loss_s):.6f} vs {float(loss_n):.6f}; worst leaf grad rel err {err:.2e}")
    assert err <= 1e-5


def test_shared_prefix_costs_at_most_0p6_of_naive_and_encodes_video_once(models, monkeypatch):
    model_def, trainable, frozen = models[False]
    # Prompt-heavy: 16 frames (65 video tokens), short responses.
    batch = make_batch(model_def.config, prompts=[(2, 3), (1, 2)], responses=[(3, 2), (2, 3)],
                       frames=16, resp_len=3)
    batch = jax.tree.map(jnp.asarray, step_lib.normalize_batch(batch, model_def.config))
    flops = {}
    for layout in ("shared", "naive"):
        cost = _grad_fn(model_def, layout).lower(trainable, frozen, batch).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops[layout] = float(cost["flops"])
    ratio = flops["shared"] / flops["naive"]
    print(f"FLOPs shared {flops['shared']:.3e} naive {flops['naive']:.3e} ratio {ratio:.3f}")
    assert ratio <= 0.6

    encoded = []
    original = VideoLLM.encode_video

    def spy(self, frames):
        encoded.append(frames.shape[0])
        return original(self, frames)

    monkeypatch.setattr(VideoLLM, "encode_video", spy)
    jax.eval_shape(functools.partial(step_lib.loss_fn, model_def=model_def, cfg={"layout": "shared"}),
                   trainable, frozen, batch)
    assert encoded == [2]  # one call, one video per pair


def test_accumulation_4_micro_batches_equals_the_full_batch(models):
    model_def, trainable, frozen = models[False]
    batch = make_batch(model_def.config, prompts=[(3, 4), (1, 1), (2, 2), (4, 1)],
                       responses=[(5, 3), (2, 6), (4, 4), (1, 2)], weights=[1, 1, 0, 1], seed=1)
    results = {}
    for k in (1, 4):
        fn = functools.partial(step_lib.compute_grads, model_def=model_def,
                               cfg={"grad_accum_steps": k, "chunk_size": 4})
        results[k] = jax.jit(fn)(trainable, frozen, batch)
    (loss1, grads1, m1), (loss4, grads4, m4) = results[1], results[4]
    np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
    err = _rel_err(grads4, grads1)
    print(f"accumulation: loss {float(loss1):.6f} vs {float(loss4):.6f}; worst leaf grad rel err {err:.2e}")
    assert err <= 1e-5
    for name in m1:
        np.testing.assert_allclose(m4[name][0], m1[name][0], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(m4[name][1], m1[name][1], rtol=1e-6, err_msg=name)


def test_zero_weight_pairs_count_as_dropped(models):
    model_def, trainable, frozen = models[False]
    kwargs = dict(prompts=[(3, 4), (1, 1), (2, 2)], responses=[(5, 3), (2, 6), (4, 4)], seed=2)
    full = make_batch(model_def.config, weights=[1, 0, 1], **kwargs)
    dropped = jax.tree.map(lambda x: x[np.asarray([0, 2])], make_batch(model_def.config, **kwargs))
    fn = jax.jit(functools.partial(step_lib.loss_fn, model_def=model_def, cfg={"chunk_size": 4}))
    got = fn(trainable, frozen, step_lib.normalize_batch(full, model_def.config))
    want = fn(trainable, frozen, step_lib.normalize_batch(dropped, model_def.config))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for name in want[1]:
        np.testing.assert_allclose(got[1][name], want[1][name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_dpo_without_reference_logps_names_the_missing_keys(models):
    model_def, trainable, frozen = models[False]
    batch = step_lib.normalize_batch(make_batch(model_def.config, **PAIR_BATCH), model_def.config)
    fn = functools.partial(step_lib.loss_fn, model_def=model_def, cfg={"loss": {"name": "dpo"}})
    with pytest.raises(ValueError, match="ref_chosen_logps.*ref_rejected_logps"):
        jax.eval_shape(fn, trainable, frozen, batch)


def trl_dpo_float64(policy_tokens, ref_tokens, masks, beta, kind):
    """TRL DPOTrainer's per-pair loss in float64 from per-token log-probs {chosen, rejected}
    [B, T]: log-ratios summed over each response, divided by its token count for IPO only."""
    ratio = {k: ((policy_tokens[k] - ref_tokens[k]) * masks[k]).sum(-1) for k in masks}
    if kind == "ipo":
        ratio = {k: ratio[k] / np.maximum(masks[k].sum(-1), 1.0) for k in masks}
    delta = ratio["chosen"] - ratio["rejected"]
    if kind == "ipo":
        return (delta - 1.0 / (2.0 * beta)) ** 2
    return np.logaddexp(0.0, -beta * delta)  # sigmoid: −log σ(β·Δ)


@pytest.mark.parametrize("kind", ["ipo", "sigmoid"])
def test_dpo_objective_matches_trl_float64(kind):
    # The trainer's path from pair log-probs (sums + counts, as pair_logps returns them) and the
    # cached summed reference log-probs to the per-pair loss; no model needed.
    rng = np.random.default_rng(3)
    pairs, max_len, beta = 50, 24, 0.5
    positions = np.arange(max_len)[None]
    masks = {k: (positions < rng.integers(1, max_len + 1, (pairs, 1))).astype(np.float64)
             for k in ("chosen", "rejected")}
    # Multiples of 2⁻¹⁰: every masked sum is exact in float32, so the trainer sees exact inputs.
    policy, ref = ({k: -rng.integers(0, 8 * 1024, (pairs, max_len)) / 1024.0 for k in masks}
                   for _ in range(2))
    logps = {}
    for k in masks:
        logps[k] = (policy[k] * masks[k]).sum(-1)
        logps[f"{k}_tokens"] = masks[k].sum(-1)
    batch = {"pair_weight": np.ones(pairs), "chosen_mask": masks["chosen"],
             "ref_chosen_logps": (ref["chosen"] * masks["chosen"]).sum(-1),
             "ref_rejected_logps": (ref["rejected"] * masks["rejected"]).sum(-1)}
    cfg = {"loss": {"name": "dpo", "dpo_kind": kind, "beta": beta, "label_smoothing": 0.0}}
    # One pair per vmapped call: the objective's pair mean is then that pair's loss.
    single = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32)[:, None], (logps, batch))
    got = jax.vmap(lambda lp, b: step_lib.objective(lp, b, cfg)[0])(*single)
    want = trl_dpo_float64(policy, ref, masks, beta, kind)
    error = np.abs(np.asarray(got, np.float64) - want)
    print(f"{kind}: trainer objective vs TRL float64, max abs err {error.max():.2e}, "
          f"max rel err {(error / np.abs(want)).max():.2e}")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_schedules_warm_up_then_decay():
    cfg = dict(learning_rate=1.0, warmup_ratio=0.1, total_steps=100)
    for kind, mid, end in (("linear", 1 - 40 / 90, 0.0), ("constant", 1.0, 1.0)):
        sched = state_lib.make_schedule(dict(cfg, schedule=kind))
        np.testing.assert_allclose([sched(0), sched(5), sched(10), sched(50), sched(100)],
                                   [0.0, 0.5, 1.0, mid, end], atol=1e-6)
    cosine = state_lib.make_schedule(dict(cfg, schedule="cosine"))
    np.testing.assert_allclose([cosine(10), cosine(55), cosine(100)], [1.0, 0.5, 0.0], atol=1e-6)


def test_train_steps_update_only_trainable_params_and_skip_non_finite():
    model = VideoLLM(tiny_config(), rngs=nnx.Rngs(0))
    opt_cfg = dict(learning_rate=3e-3, schedule="constant", warmup_ratio=0.0, total_steps=10,
                   max_grad_norm=1.0)
    model_def, state = state_lib.init_state(model, opt_cfg, 0)
    step = step_lib.make_train_step(model_def, {"chunk_size": 4}, opt_cfg)
    batch = make_batch(model_def.config, **PAIR_BATCH)
    host = lambda tree: jax.tree.map(np.array, tree)  # noqa: E731  (copies: the state is donated)
    frozen0, trainable0 = host(state.params["frozen"]), host(state.params["trainable"])
    losses = []
    for _ in range(4):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"][0]))
    print("losses", losses)
    assert losses[-1] < losses[0]
    for a, b in zip(jax.tree.leaves(frozen0), jax.tree.leaves(state.params["frozen"])):
        np.testing.assert_array_equal(a, b)
    assert all(np.any(a != b) for a, b in
               zip(jax.tree.leaves(trainable0), jax.tree.leaves(state.params["trainable"])))
    assert int(state.step) == 4 and float(metrics["optim/skipped_total"][0]) == 0

    # A poisoned batch (NaN pair weight -> NaN loss and gradients): skipped and counted.
    before = host(state.params["trainable"])
    poisoned = dict(batch, pair_weight=np.asarray([1.0, np.nan], np.float32))
    state, metrics = step(state, poisoned)
    assert not np.isfinite(float(metrics["loss"][0]))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params["trainable"])):
        np.testing.assert_array_equal(a, b)
    assert [int(x) for x in state_lib.skip_counts(state.opt_state)] == [1, 1]
    state, metrics = step(state, batch)  # a finite step resets the consecutive count only
    assert [int(x) for x in state_lib.skip_counts(state.opt_state)] == [0, 1]
    assert np.isfinite(float(metrics["loss"][0])) and int(state.step) == 6


def test_lora_steps_train_the_adapters_only_and_start_at_the_base_loss():
    from leanpo_jax.models.lora import LoRAConfig, LoRAParam

    base = VideoLLM(tiny_config(), rngs=nnx.Rngs(0))
    model = VideoLLM(tiny_config().replace(lora=LoRAConfig(rank=4, alpha=8.0)), rngs=nnx.Rngs(0))
    nnx.update(model, nnx.state(base, nnx.Param))  # the same base weights
    opt_cfg = dict(learning_rate=3e-2, schedule="constant", warmup_ratio=0.0, total_steps=10, max_grad_norm=1.0)
    model_def, state = state_lib.init_state(model, opt_cfg, 0)
    trainable = dict(nnx.to_flat_state(state.params["trainable"]))
    assert len(trainable) == 2 * 7 and all(p[-1].endswith(("_lora_a", "_lora_b")) for p in trainable)
    assert all(p[:2] == ("language_model", "layers") for p in trainable)
    base_def, base_state = state_lib.init_state(base, opt_cfg, 0)
    batch = make_batch(model_def.config, **PAIR_BATCH)
    base_loss = float(step_lib.make_train_step(base_def, {"chunk_size": 4}, opt_cfg)(base_state, batch)[1]["loss"][0])
    step = step_lib.make_train_step(model_def, {"chunk_size": 4}, opt_cfg)
    frozen0 = jax.tree.map(np.array, state.params["frozen"])
    b0 = np.array(state.params["trainable"]["language_model"]["layers"]["q_kernel_lora_b"][...])
    assert not b0.any()
    losses = []
    for _ in range(3):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"][0]))
    assert losses[0] == pytest.approx(base_loss, abs=1e-6)  # B = 0: the base model's loss
    assert losses[-1] < losses[0]
    for a, b in zip(jax.tree.leaves(frozen0), jax.tree.leaves(state.params["frozen"])):
        np.testing.assert_array_equal(a, b)  # every base weight bit-identical
    assert np.abs(np.asarray(state.params["trainable"]["language_model"]["layers"]["q_kernel_lora_b"][...])).max() > 0
    assert not any(isinstance(v, LoRAParam) for v in jax.tree.leaves(
        state.params["frozen"], is_leaf=lambda x: isinstance(x, nnx.Variable)))
    # The shared-prefix layout equals the naive one with adapters too (B is non-zero by now).
    trainable, frozen = state.params["trainable"], state.params["frozen"]
    batch = jax.tree.map(jnp.asarray, step_lib.normalize_batch(batch, model_def.config))
    (loss_s, _), grads_s = _grad_fn(model_def, "shared")(trainable, frozen, batch)
    (loss_n, _), grads_n = _grad_fn(model_def, "naive")(trainable, frozen, batch)
    np.testing.assert_allclose(loss_s, loss_n, rtol=1e-5)
    assert _rel_err(grads_s, grads_n) <= 1e-5
    # Adapter dropout: the first loss is still the base one (B = 0), the update differs from the
    # no-dropout step's, and a step from the same state is bit-identical (masks from the state).
    dropping = VideoLLM(tiny_config().replace(lora=LoRAConfig(rank=4, alpha=8.0, dropout=0.5)), rngs=nnx.Rngs(0))
    nnx.update(dropping, nnx.state(base, nnx.Param))
    drop_def, drop_state = state_lib.init_state(dropping, opt_cfg, 0)
    drop_step = step_lib.make_train_step(drop_def, {"chunk_size": 4}, opt_cfg)
    runs = [drop_step(jax.tree.map(jnp.copy, drop_state), batch) for _ in range(2)]
    assert float(runs[0][1]["loss"][0]) == pytest.approx(base_loss, abs=1e-6)
    for a, b in zip(jax.tree.leaves(runs[0][0].params), jax.tree.leaves(runs[1][0].params)):
        np.testing.assert_array_equal(a, b)
    plain_state, _ = step(jax.tree.map(jnp.copy, drop_state), batch)
    b_drop, b_plain = (np.asarray(s.params["trainable"]["language_model"]["layers"]["up_kernel_lora_b"][...])
                       for s in (runs[0][0], plain_state))
    assert np.abs(b_drop - b_plain).max() > 1e-6
