"""The train step on a (data 2, fsdp 2, tensor 2) mesh of the 8 simulated CPU devices equals the
1-device step: metrics, parameter updates, frozen params; batch-size errors name the config key.

The optimizer is made SGD-like (Adam with eps >> |g|: update = lr·m̂/(√v̂ + eps) ≈ (lr/eps)·m̂,
linear in the gradients), since Adam's first steps (≈ lr·sign(g)) amplify reduction-order noise
in near-zero gradient entries into lr-sized differences.
"""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from leanpo_jax.models import VideoLLM, get_preset, num_video_tokens
from leanpo_jax.train import batch_placement, sharded_step
from leanpo_jax.train import mesh as mesh_lib
from leanpo_jax.train import state as state_lib
from leanpo_jax.train import step as step_lib

VOCAB, FRAMES, STEPS = 512, 4, 3
STEP_CFG = {"chunk_size": 4}
# Effective SGD learning rate lr / eps = 0.1; no clipping (keeps the update linear in g).
OPT_CFG = dict(learning_rate=100.0, eps=1e3, schedule="constant", warmup_ratio=0.0,
               total_steps=10, max_grad_norm=0.0, weight_decay=0.0)
PAIRS = dict(prompts=[(3, 4), (1, 1), (2, 2), (4, 1)], responses=[(5, 3), (2, 6), (4, 4), (1, 2)])


def tiny_config():
    config = get_preset("tiny")
    return config.replace(text=dataclasses.replace(config.text, vocab_size=VOCAB))


def make_batch(config, *, prompts, responses, resp_len=6, pad=2, seed=0):
    """Pipeline-shaped numpy batch (as tests/train/test_step.py): right-padded prompts with the
    video placeholders, right-padded chosen / rejected responses."""
    rng = np.random.default_rng(seed)
    n = num_video_tokens(config, FRAMES)
    rows = [np.concatenate([rng.integers(10, VOCAB, a), np.full(n, config.video_token_index),
                            rng.integers(10, VOCAB, b)]) for a, b in prompts]
    lengths = np.asarray([len(r) for r in rows], np.int32)
    size, width = len(rows), int(lengths.max()) + pad
    prompt = np.zeros((size, width), np.int32)
    for i, r in enumerate(rows):
        prompt[i, : len(r)] = r
    out = {}
    for k, name in enumerate(("chosen", "rejected")):
        ids, mask = np.zeros((size, resp_len), np.int32), np.zeros((size, resp_len), np.int32)
        for i, lens in enumerate(responses):
            ids[i, : lens[k]] = rng.integers(10, VOCAB, lens[k])
            mask[i, : lens[k]] = 1
        out[name + "_ids"], out[name + "_mask"] = ids, mask
    s = config.vision.image_size
    return dict(
        out, frames=rng.integers(0, 256, (size, FRAMES, s, s, 3)).astype(np.uint8),
        prompt_ids=prompt, prompt_mask=(np.arange(width)[None] < lengths[:, None]).astype(np.int32),
        prompt_lengths=lengths, pair_weight=np.ones(size, np.float32))


def _host(tree):
    return jax.tree.map(np.array, tree)  # copies (the state is donated)


def _flat(tree):
    return {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(tree)}


def _init():
    return state_lib.init_state(VideoLLM(tiny_config(), rngs=nnx.Rngs(0)), OPT_CFG, 0)


@pytest.fixture(scope="module")
def mesh():
    return mesh_lib.mesh_from_config({"mesh": {"data": 2, "fsdp": 2, "tensor": 2}})


@pytest.fixture(scope="module")
def runs(mesh):
    """STEPS steps on 1 device and on the mesh from the same init: per step (trainable before,
    trainable after, metrics) on the host, plus the final states and the mesh step."""
    model_def, state = _init()
    batch = make_batch(model_def.config, **PAIRS)
    abstract = jax.eval_shape(lambda s: s, state)
    out = {"abstract": abstract, "frozen0": _flat(state.params["frozen"]), "batch": batch,
           "model_def": model_def}

    one = step_lib.make_train_step(model_def, STEP_CFG, OPT_CFG)
    model_def_m, state_m = _init()  # a second state: the mesh run donates its own buffers
    state_m = state_lib.shard_state(state_m, mesh)
    sharded = sharded_step.sharded_train_step(model_def_m, STEP_CFG, OPT_CFG, abstract, batch, mesh)
    for name, fn, st, b in (("one", one, state, batch),
                            ("mesh", sharded, state_m, batch_placement.global_batch(batch, mesh))):
        history = []
        for _ in range(STEPS):
            before = _flat(st.params["trainable"])
            st, metrics = fn(st, b)
            history.append((before, _flat(st.params["trainable"]), metrics))
        out[name], out[name + "_state"] = history, st
    out["step"] = sharded
    return out


def test_mesh_step_equals_one_device(runs):
    worst_metric = worst_update = worst_param = 0.0
    for (b1, a1, m1), (bm, am, mm) in zip(runs["one"], runs["mesh"]):
        assert m1.keys() == mm.keys()
        for name in m1:
            for want, got in zip(m1[name], mm[name]):
                want, got = float(want), float(got)
                # rewards/margins is a difference of ~50-sized rewards: allow 1e-5 absolute too.
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
                worst_metric = max(worst_metric, abs(got - want) / max(abs(want), 1e-30))
        assert a1.keys() == am.keys()
        for path in a1:
            up1, upm = a1[path] - b1[path], am[path] - bm[path]
            scale = np.abs(up1).max()
            assert scale > 0, path  # every trainable leaf moves
            # Updates agree to 1e-3 of their size (f32 rounding of p + Δ is ~1e-5 of Δ here).
            err = float(np.abs(upm - up1).max() / scale)
            assert err <= 1e-3, (path, err)
            worst_update = max(worst_update, err)
            np.testing.assert_allclose(am[path], a1[path], rtol=1e-5, atol=1e-5 * scale,
                                       err_msg=str(path))
            worst_param = max(worst_param, float(
                np.abs(am[path] - a1[path]).max() / np.abs(a1[path]).max()))
    losses = [float(m["loss"][0]) for _, _, m in runs["mesh"]]
    print(f"losses {losses}; max rel err: metrics {worst_metric:.2e}, updates {worst_update:.2e}, "
          f"params {worst_param:.2e}")
    assert losses[-1] < losses[0]

    # The outputs really are sharded: embed table and its Adam moments split, metrics replicated.
    state = runs["mesh_state"]
    embed = state.params["trainable"]["language_model"]["embed_tokens"][...]
    assert embed.sharding.spec == P("tensor", "fsdp")
    assert embed.addressable_shards[0].data.shape == (VOCAB // 2, embed.shape[1] // 2)
    adam = state.opt_state.inner_state[0][0]  # apply_if_finite -> chain -> adamw -> adam
    assert adam.mu["language_model"]["embed_tokens"][...].sharding.spec == P("tensor", "fsdp")
    assert adam.count.sharding.spec == P()
    q = state.params["trainable"]["language_model"]["layers"]["q_kernel"][...]
    assert q.sharding.spec == P(None, "fsdp", "tensor")
    metric = runs["mesh"][-1][2]["loss"][0]
    assert metric.sharding.is_fully_replicated
    assert int(state.step) == STEPS and state.step.sharding.is_fully_replicated


def test_frozen_params_bit_identical_on_the_mesh(runs):
    frozen0 = runs["frozen0"]
    for name in ("one", "mesh"):
        frozen = _flat(runs[name + "_state"].params["frozen"])
        assert frozen.keys() == frozen0.keys() and frozen
        for path in frozen0:
            np.testing.assert_array_equal(frozen[path], frozen0[path], err_msg=f"{name} {path}")
    frozen_m = runs["mesh_state"].params["frozen"]
    assert any(not v[...].sharding.is_fully_replicated
               for v in jax.tree.leaves(frozen_m, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def test_batch_not_divisible_by_data_times_fsdp_names_data_batch_size(runs, mesh):
    odd = jax.tree.map(lambda x: jax.ShapeDtypeStruct((6,) + x.shape[1:], x.dtype), runs["batch"])
    with pytest.raises(ValueError, match=r"data\.batch_size"):
        sharded_step.sharded_train_step(runs["model_def"], STEP_CFG, OPT_CFG, runs["abstract"], odd, mesh)


def test_plain_array_params_take_their_names_from_the_model_def(runs, mesh):
    abstract = runs["abstract"]
    pure = {k: nnx.to_pure_dict(v) for k, v in abstract.params.items()}
    plain = abstract.replace(params=pure, opt_state=jax.eval_shape(
        state_lib.make_optimizer(OPT_CFG).init, pure["trainable"]))
    got = state_lib.state_shardings(plain, mesh, names_from=runs["model_def"])
    assert got.params["trainable"]["language_model"]["embed_tokens"].spec == P("tensor", "fsdp")
    assert got.opt_state.inner_state[0][0].nu["language_model"]["embed_tokens"].spec == P(
        "tensor", "fsdp")
    want = state_lib.state_shardings(abstract, mesh)
    for key in ("trainable", "frozen"):
        assert (jax.tree.map(lambda s: s.spec, got.params[key])
                == nnx.to_pure_dict(jax.tree.map(lambda s: s.spec, want.params[key])))
    # Without names_from plain arrays are replicated.
    bare = state_lib.state_shardings(plain, mesh)
    assert all(s.spec == P() for s in jax.tree.leaves(bare.params))


def test_init_state_on_the_mesh_is_laid_out_and_valued_like_shard_state(runs, mesh):
    """init_state(mesh=) (the trainer's builder) == shard_state(init_state()): same shardings,
    same values; neither aliases the model's buffers (a donated step would delete them)."""
    model = VideoLLM(tiny_config(), rngs=nnx.Rngs(0))
    model_def, placed = state_lib.init_state(model, OPT_CFG, 0, mesh=mesh)
    _, plain = _init()
    moved = state_lib.shard_state(plain, mesh)
    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    got, want = (jax.tree.leaves(s, is_leaf=is_var) for s in (placed, moved))
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        a, b = (x[...] if is_var(x) else x for x in (a, b))
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (a.sharding, b.sharding)
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert model_def.abstract_params is not None
    before = _flat(nnx.state(model, nnx.Param))
    for leaf in jax.tree.leaves(placed.params) + jax.tree.leaves(plain.params):
        leaf.delete()
    after = _flat(nnx.state(model, nnx.Param))  # still readable: no buffer was shared
    assert before.keys() == after.keys()
