"""Mesh from config, logical rules -> NamedShardings, global batches, sharded == 1-device forward.

Runs on the 8 simulated CPU devices of tests/conftest.py.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from leanpo_jax.models import abstract_model, build_model, get_preset, num_video_tokens
from leanpo_jax.train import batch_placement, partitioning
from leanpo_jax.train import mesh as mesh_lib


def _mesh(data, fsdp, tensor, n=None):
    devices = jax.devices()[: n or data * fsdp * tensor]
    return mesh_lib.mesh_from_config({"mesh": {"data": data, "fsdp": fsdp, "tensor": tensor}}, devices)


@pytest.fixture(scope="module")
def tiny_params():
    return nnx.state(abstract_model(get_preset("tiny")), nnx.Param)


def _flat(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, (nnx.Variable, NamedSharding)))
    return {jax.tree_util.keystr(p): v for p, v in flat}


# ----------------------------------------------------------------------------- mesh
def test_mesh_fills_minus_one_and_uses_auto_axes():
    assert jax.device_count() == 8
    mesh = mesh_lib.mesh_from_config(ml_collections.ConfigDict({"mesh": mesh_lib.mesh_config()}))
    assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert dict(mesh_lib.mesh_from_config({"data": 2, "fsdp": -1, "tensor": 2}).shape) == {
        "data": 2, "fsdp": 2, "tensor": 2}
    assert dict(mesh_lib.mesh_from_config({"data": -1}).shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    one = mesh_lib.mesh_from_config({"mesh": mesh_lib.mesh_config()}, jax.devices()[:1])
    assert dict(one.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert mesh_lib.data_parallel_size(_mesh(2, 2, 2)) == 4


@pytest.mark.parametrize("mesh, message", [
    ({"data": 3, "fsdp": -1, "tensor": 1}, "does not divide the 8 devices"),
    ({"data": 2, "fsdp": 2, "tensor": 1}, "product 4 != 8 devices"),
    ({"data": -1, "fsdp": -1, "tensor": 1}, "at most one axis may be -1"),
    ({"data": 0, "fsdp": -1, "tensor": 1}, "mesh.data=0"),
])
def test_mesh_errors_name_the_config_keys(mesh, message):
    with pytest.raises(ValueError, match=message) as err:
        mesh_lib.mesh_from_config({"mesh": mesh})
    assert "mesh." in str(err.value)


# ----------------------------------------------------------------------------- rules
@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 2, 4), (1, 8, 1), (8, 1, 1), (1, 1, 8)])
def test_every_tiny_param_gets_a_valid_sharding(tiny_params, shape):
    mesh = _mesh(*shape)
    shardings = _flat(partitioning.param_shardings(tiny_params, mesh))
    params = _flat(tiny_params)
    assert shardings.keys() == params.keys() and len(params) == 40
    for path, var in params.items():
        sharding, dims = shardings[path], var.shape
        assert isinstance(sharding, NamedSharding) and sharding.mesh == mesh, path
        assert len(sharding.spec) <= len(dims), path
        used = []
        for dim, axes in zip(dims, sharding.spec):
            axes = () if axes is None else ((axes,) if isinstance(axes, str) else axes)
            used += list(axes)
            assert dim % math.prod(mesh.shape[a] for a in axes) == 0, (path, sharding.spec)
        assert len(used) == len(set(used)), (path, sharding.spec)
        sharding.shard_shape(dims)  # raises when invalid


def test_spot_checks_and_kv_heads_fallback(tiny_params):
    sh = _flat(partitioning.param_shardings(tiny_params, _mesh(2, 2, 2)))
    assert sh["['language_model']['embed_tokens']"].spec == P("tensor", "fsdp")
    assert sh["['language_model']['layers']['q_kernel']"].spec == P(None, "fsdp", "tensor")
    assert sh["['language_model']['layers']['k_kernel']"].spec == P(None, "fsdp", "tensor")
    assert sh["['language_model']['layers']['down_kernel']"].spec == P(None, "tensor", "fsdp")
    assert sh["['language_model']['final_norm']"].spec == P()
    # tiny GQA: 4 heads, 2 kv heads; tensor=4 shards heads but replicates kv_heads.
    sh4 = _flat(partitioning.param_shardings(tiny_params, _mesh(1, 2, 4)))
    assert sh4["['language_model']['layers']['q_kernel']"].spec == P(None, "fsdp", "tensor")
    assert sh4["['language_model']['layers']['k_kernel']"].spec == P(None, "fsdp")
    assert sh4["['language_model']['layers']['k_bias']"].spec == P()


def test_spec_for_never_reuses_a_mesh_axis():
    mesh = _mesh(2, 2, 2)
    rules = (("a", "tensor"), ("b", "tensor"), ("c", ("data", "fsdp")), ("d", ("fsdp", "tensor")))
    assert partitioning.spec_for((4, 4), ("a", "b"), mesh, rules) == P("tensor")
    assert partitioning.spec_for((4, 4), ("c", "d"), mesh, rules) == P(("data", "fsdp"), "tensor")
    assert partitioning.spec_for((3, 4), ("a", "b"), mesh, rules) == P(None, "tensor")  # 3 % 2: replicated
    assert partitioning.spec_for((4, 4), ("a", "unknown"), mesh, rules) == P("tensor")
    assert partitioning.spec_for((4,), None, mesh, rules) == P()
    with pytest.raises(ValueError, match="mesh has no axis 'expert'"):
        partitioning.spec_for((4,), ("e",), mesh, (("e", "expert"),))


def test_optimizer_state_follows_params(tiny_params):
    mesh = _mesh(2, 2, 2)
    p_sh = partitioning.param_shardings(tiny_params, mesh)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    opt_state = jax.eval_shape(tx.init, tiny_params)
    o_sh = partitioning.like_params(opt_state, p_sh)
    adam = o_sh[1][0]
    flat_p = _flat(p_sh)
    for tree in (adam.mu, adam.nu):
        assert _flat(tree).keys() == flat_p.keys()
        for path, s in _flat(tree).items():
            assert s.spec == flat_p[path].spec, path
    assert adam.count.spec == P()
    # Pure-dict layouts (nnx.to_pure_dict) of params and optimizer state match by path too.
    pure = nnx.to_pure_dict(tiny_params)
    pure_opt = jax.eval_shape(optax.adam(1e-3).init, pure)
    pure_sh = partitioning.like_params(pure_opt, nnx.to_pure_dict(p_sh))
    assert pure_sh[0].mu["language_model"]["embed_tokens"].spec == P("tensor", "fsdp")
    assert _flat(pure_sh[0].nu) == _flat(nnx.to_pure_dict(p_sh))
    # The trainable subset alone works the same way.
    lm = partitioning.param_shardings(tiny_params["language_model"], mesh)
    assert _flat(lm)["['embed_tokens']"].spec == P("tensor", "fsdp")


# ----------------------------------------------------------------------------- batches
def _host_batch(b=4, f=2, s=24, p=6, r=5):
    rng = np.random.default_rng(0)
    return {
        "frames": rng.integers(0, 255, (b, f, s, s, 3), dtype=np.uint8),
        "prompt_ids": rng.integers(0, 100, (b, p)).astype(np.int32),
        "prompt_mask": np.ones((b, p), np.int32), "prompt_lengths": np.full((b,), p, np.int32),
        "chosen_ids": rng.integers(0, 100, (b, r)).astype(np.int32),
        "chosen_mask": np.ones((b, r), np.int32),
        "rejected_ids": rng.integers(0, 100, (b, r)).astype(np.int32),
        "rejected_mask": np.ones((b, r), np.int32),
        "pair_weight": np.ones((b,), np.float32), "record_index": np.arange(b, dtype=np.int32),
    }


def test_global_batch_shapes_and_shardings():
    mesh = _mesh(2, 2, 2)
    host = _host_batch()
    batch = batch_placement.global_batch(host, mesh)
    specs = batch_placement.batch_shardings(host, mesh)
    for key, value in host.items():
        assert batch[key].shape == value.shape and batch[key].dtype == value.dtype, key
        assert batch[key].sharding.is_equivalent_to(specs[key], value.ndim), key
        assert specs[key].spec == P(("data", "fsdp")), key
        np.testing.assert_array_equal(np.asarray(batch[key]), value)
    assert batch["frames"].addressable_shards[0].data.shape == (1, 2, 24, 24, 3)


def test_batch_not_divisible_names_data_batch_size():
    mesh = _mesh(2, 2, 2)
    with pytest.raises(ValueError, match=r"data\.batch_size.*multiple of 4"):
        batch_placement.global_batch(_host_batch(b=6), mesh)
    with pytest.raises(ValueError, match=r"data\.batch_size"):
        batch_placement.batch_shardings({"x": jax.ShapeDtypeStruct((2, 3), jnp.int32)}, mesh)


def test_distributed_is_a_noop_unless_configured():
    assert not mesh_lib.maybe_initialize_distributed(ml_collections.ConfigDict({"seed": 0}))
    assert not mesh_lib.maybe_initialize_distributed({"distributed": mesh_lib.distributed_config()})
    bad = {"distributed": {"coordinator_address": "localhost:1234", "num_processes": 2,
                           "process_id": 2}}
    with pytest.raises(ValueError, match="distributed.process_id"):
        mesh_lib.maybe_initialize_distributed(bad)


# ----------------------------------------------------------------------------- sharded forward
def test_sharded_model_matches_one_device():
    config = get_preset("tiny")
    frames_n, batch = 2, 4
    n_video = num_video_tokens(config, frames_n)
    rng = np.random.default_rng(1)
    ids = np.concatenate([rng.integers(10, 5000, (batch, 3)),
                          np.full((batch, n_video), config.video_token_index),
                          rng.integers(10, 5000, (batch, 4))], axis=1).astype(np.int32)
    frames = rng.uniform(-1, 1, (batch, frames_n, 24, 24, 3)).astype(np.float32)

    def forward(model, ids, frames):
        return model(ids, model.encode_video(frames))

    reference = np.asarray(nnx.jit(forward)(build_model(config, seed=0), ids, frames))

    mesh = _mesh(2, 2, 2)
    model = partitioning.build_sharded(lambda: build_model(config, seed=0), mesh)
    graphdef, state = nnx.split(model)
    shardings = partitioning.param_shardings(state, mesh)
    embed = state["language_model"]["embed_tokens"]
    assert embed[...].sharding.spec == P("tensor", "fsdp")
    # shard_model on a concrete model gives the same placement.
    placed = nnx.state(partitioning.shard_model(build_model(config, seed=0), mesh))
    assert placed["language_model"]["embed_tokens"][...].sharding.is_equivalent_to(
        embed[...].sharding, 2)
    # Same seed, same values (the jitted init may round the std scaling 1 ulp differently).
    np.testing.assert_allclose(np.asarray(placed["language_model"]["embed_tokens"][...]),
                               np.asarray(embed[...]), rtol=1e-6, atol=1e-8)

    def pure(state, ids, frames):
        return forward(nnx.merge(graphdef, state), ids, frames)

    b_sh = batch_placement.batch_shardings({"ids": ids, "frames": frames}, mesh)
    with jax.set_mesh(mesh):
        out = jax.jit(pure, in_shardings=(shardings, b_sh["ids"], b_sh["frames"]),
                      out_shardings=NamedSharding(mesh, P(("data", "fsdp"))))(state, ids, frames)
    assert out.sharding.spec == P(("data", "fsdp"))
    out = np.asarray(out)
    assert np.linalg.norm(out - reference) <= 1e-5 * np.linalg.norm(reference)


def test_train_modules_import_at_module_level_only():
    """No import inside a function (the old sharding module dodged a cycle that way)."""
    import ast
    import pathlib

    import leanpo_jax.train as train_pkg

    folder = pathlib.Path(train_pkg.__file__).parent
    for name in ("mesh", "partitioning", "batch_placement", "state", "sharded_step", "stopping"):
        tree = ast.parse((folder / f"{name}.py").read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not inner, f"{name}.py: import inside {fn.name}()"
