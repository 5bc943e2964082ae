"""Checkpointer: exact round trip, resume on another mesh, retention, config checks, SIGTERM."""

import dataclasses
import json
import os
import shutil
import signal
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from leanpo_jax.models import VideoLLM, get_preset
from leanpo_jax.train import checkpoint as ckpt_lib
from leanpo_jax.train import mesh as mesh_lib, partitioning, stopping
from leanpo_jax.train import state as state_lib

VOCAB = 512
DATA_STATE = {"epoch": 1, "position": np.int64(17), "skipped": {"too_long": 3, "bad_video": 0}}
META = {"config": {"model": {"preset": "tiny", "frames": (4, 8)}, "seed": 0},
        "frozen_from": "seed:0", "note": None}
JSON = {"epoch": 1, "position": 17, "skipped": {"too_long": 3, "bad_video": 0}}  # as read back


@pytest.fixture(scope="module")
def train_state():
    """A tiny TrainState (bf16 frozen params, f32 master weights) with a non-trivial optimizer
    state: Adam moments/counts and the apply_if_finite counters all moved off their init."""
    config = get_preset("tiny")
    config = config.replace(text=dataclasses.replace(config.text, vocab_size=VOCAB),
                            param_dtype="bfloat16")
    model = VideoLLM(config, rngs=nnx.Rngs(0))
    _, state = state_lib.init_state(model, {"total_steps": 10}, 0)
    leaves, treedef = jax.tree.flatten(state.opt_state)
    rng = np.random.default_rng(0)
    moved = []
    for x in leaves:
        if jnp.issubdtype(x.dtype, jnp.floating):
            moved.append(jnp.asarray(rng.standard_normal(x.shape), x.dtype))
        elif jnp.issubdtype(x.dtype, jnp.integer):
            moved.append(x + 7)
        else:  # apply_if_finite's last_finite flag
            moved.append(jnp.logical_not(x))
    opt_state = jax.tree.unflatten(treedef, moved)
    opt_state = opt_state._replace(notfinite_count=jnp.int32(1), total_notfinite=jnp.int32(4))
    return state.replace(opt_state=opt_state, step=jnp.int32(5),
                         rng=jax.random.split(jax.random.key(123))[1])


def _assert_bit_identical(got, want):
    g_flat, g_def = jax.tree_util.tree_flatten_with_path(got)
    w_flat, w_def = jax.tree_util.tree_flatten_with_path(want)
    assert g_def == w_def
    for (path, g), (_, w) in zip(g_flat, w_flat):
        name = jax.tree_util.keystr(path)
        if jax.dtypes.issubdtype(w.dtype, jax.dtypes.prng_key):
            assert g.dtype == w.dtype, name
            g, w = jax.random.key_data(g), jax.random.key_data(w)
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape, name
        assert g.tobytes() == w.tobytes(), name


def test_async_round_trip_is_bit_identical(train_state, tmp_path):
    ckpt = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), async_save=True)
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    assert ckpt.save(5, train_state, data_state=DATA_STATE, meta=META)
    ckpt.wait()
    assert ckpt.latest_step() == 5
    abstract = jax.eval_shape(lambda: train_state)
    abstract = jax.tree.map(  # ShapeDtypeStructs with the saved arrays' shardings
        lambda a, x: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=x.sharding),
        abstract, train_state)
    state, data_state, meta = ckpt.restore(abstract)
    _assert_bit_identical(state, train_state)
    assert isinstance(state.params["trainable"], nnx.State)
    assert type(state.opt_state) is type(train_state.opt_state)
    assert state_lib.skip_counts(state.opt_state) == (1, 4)
    assert data_state == JSON
    assert meta == json.loads(json.dumps(META)) and meta["config"]["model"]["frames"] == [4, 8]
    assert ckpt.read_meta() == meta
    # Concrete arrays work as the target too (their shardings are used).
    with ckpt_lib.Checkpointer(str(tmp_path / "ckpt")) as other:
        again, _, _ = other.restore(train_state, step=5)
    _assert_bit_identical(again, train_state)
    ckpt.close()


def _broadcast(prefix, tree):
    """A sharding prefix tree (one NamedSharding per nnx Variable) -> one per array leaf."""
    return jax.tree.map(lambda s, sub: jax.tree.map(lambda _: s, sub), prefix, tree)


def test_restore_onto_a_2x2x2_mesh(train_state, tmp_path):
    ckpt = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    assert len(train_state.step.sharding.device_set) == 1  # saved from single-device arrays
    ckpt.save(5, train_state, data_state=DATA_STATE, meta=META)

    mesh = mesh_lib.mesh_from_config({"mesh": {"data": 2, "fsdp": 2, "tensor": 2}})
    abstract = jax.eval_shape(lambda: train_state)
    replicated = NamedSharding(mesh, P())
    p_sh = {k: partitioning.param_shardings(abstract.params[k], mesh) for k in abstract.params}
    shardings = state_lib.TrainState(
        params=_broadcast(p_sh, abstract.params),
        opt_state=_broadcast(partitioning.like_params(abstract.opt_state, p_sh["trainable"]),
                             abstract.opt_state),
        step=replicated, rng=replicated)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
    state, data_state, _ = ckpt.restore(target)

    _assert_bit_identical(state, train_state)
    assert data_state == JSON
    sharded = 0
    for got, want, leaf in zip(jax.tree.leaves(state), jax.tree.leaves(shardings),
                               jax.tree.leaves(target)):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            assert got.sharding.mesh.shape == mesh.shape and got.sharding.spec == P()
            continue
        assert got.sharding.is_equivalent_to(want, got.ndim), (got.sharding, want)
        sharded += any(ax is not None for ax in want.spec)
    assert sharded >= 10  # the target really splits params and Adam moments over the mesh
    ckpt.close()


def test_retention_steps_and_unfinished_saves(tmp_path):
    directory = str(tmp_path / "ckpt")
    ckpt = ckpt_lib.Checkpointer(directory, max_to_keep=2, async_save=False)
    with pytest.raises(FileNotFoundError, match=directory):
        ckpt.restore({"w": jnp.zeros(3)})
    with pytest.raises(FileNotFoundError, match=directory):
        ckpt.read_meta()
    small = lambda i: {"w": jnp.full((4,), i, jnp.float32), "n": jnp.int32(i)}  # noqa: E731
    for i in (1, 2, 3):
        assert ckpt.save(i, small(i), data_state={"i": i}, meta={"i": i})
    assert not ckpt.save(3, small(99), data_state={}, meta={})  # already saved: untouched
    assert ckpt.all_steps() == [2, 3] and ckpt.latest_step() == 3
    assert ckpt.read_meta(step=2) == {"i": 2}
    state, data_state, _ = ckpt.restore({"w": jnp.zeros(4), "n": jnp.int32(0)})
    assert float(state["w"][0]) == 3 and int(state["n"]) == 3 and data_state == {"i": 3}
    with pytest.raises(FileNotFoundError, match="step 1"):
        ckpt.restore({"w": jnp.zeros(4), "n": jnp.int32(0)}, step=1)
    ckpt.close()
    # A save interrupted before Orbax's final rename leaves a tmp folder: never a checkpoint.
    for name in ("9.orbax-checkpoint-tmp", "10.orbax-checkpoint-tmp-1764185000"):
        shutil.copytree(os.path.join(directory, "3"), os.path.join(directory, name))
    fresh = ckpt_lib.Checkpointer(directory, max_to_keep=2)
    assert fresh.all_steps() == [2, 3] and fresh.latest_step() == 3
    # Async: while a save runs it is not listed as finished, but it is not saved twice either.
    four = small(4)
    assert fresh.save(4, four, data_state={}, meta={"i": 4})
    for x in jax.tree.leaves(four):  # save returned: the arrays may be donated / freed now
        x.delete()
    assert fresh.latest_step() in (3, 4) and not fresh.save(4, small(4), data_state={}, meta={})
    fresh.wait()
    assert fresh.all_steps() == [3, 4]
    state, data_state, meta = fresh.restore({"w": jnp.zeros(4), "n": jnp.int32(0)})
    assert float(state["w"][3]) == 4 and (data_state, meta) == ({}, {"i": 4})
    with pytest.raises(ValueError, match="does not match the state"):
        fresh.restore({"w": jnp.zeros(4)})  # a leaf missing (a shape mismatch raises too)
    fresh.close()


def test_config_differences_and_resume_check():
    saved = ml_collections.ConfigDict({
        "num_steps": 100, "log_every": 10, "logging": {"wandb": False},
        "optimizer": {"learning_rate": 1e-6, "betas": (0.9, 0.999)},
        "data": {"frames": 8, "sources": ["a", "b"]}, "seed": 0})
    flat = ckpt_lib.flatten_config(saved)
    assert flat["optimizer.betas"] == [0.9, 0.999] and "logging.wandb" in flat
    assert json.loads(json.dumps(flat)) == flat
    # What a checkpoint's meta holds (config.to_dict() through JSON) compares equal.
    assert ckpt_lib.config_differences(json.loads(json.dumps(saved.to_dict())), saved,
                                       allowed=()) == []

    current = saved.to_dict()
    current.update(num_steps=200, log_every=1, seed=1)
    current["logging"] = {"wandb": True, "project": "x"}
    current["data"] = {"frames": 16, "sources": ["a", "b"], "new_key": 1}
    allowed = ("num_steps", "log_every", "logging", "eval_every")
    assert ckpt_lib.config_differences(saved.to_dict(), current, allowed=allowed) == [
        "data.frames", "data.new_key", "seed"]
    with pytest.raises(ValueError) as err:
        ckpt_lib.check_resume_config(saved.to_dict(), current, allowed=allowed, directory="/w/ckpt")
    msg = str(err.value)
    assert "data.frames: saved 8, current 16" in msg and "seed: saved 0, current 1" in msg
    assert "data.new_key: saved <absent>, current 1" in msg
    assert "/w/ckpt" in msg and "--workdir" in msg and "num_steps" not in msg.split("\n")[1]
    ckpt_lib.check_resume_config(saved, current | {"seed": 0, "data": saved.data.to_dict()},
                                 allowed=allowed, directory="/w/ckpt")  # only allowed changes


def test_sigterm_flag_sets_requested_and_restores_handlers():
    before_term, before_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stopping.SigtermFlag(sigint=True) as flag:
        assert not flag.requested
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # Python runs the handler between bytecodes of the main thread
            if flag.requested:
                break
            time.sleep(0.01)
        assert flag.requested
    assert signal.getsignal(signal.SIGTERM) is before_term
    assert signal.getsignal(signal.SIGINT) is before_int

    result = {}

    def in_thread():  # not the main thread: a no-op, no exception
        with stopping.SigtermFlag() as f:
            result["requested"] = f.requested
    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert result == {"requested": False}
    assert signal.getsignal(signal.SIGTERM) is before_term
