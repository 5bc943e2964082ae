"""LoRA checkpoints hold the adapters, optimizer, step and rng only; the frozen base comes back
from the run's source, and a checkpoint of another base is refused."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models import VideoLLM, get_preset
from leanpo_jax.models.lora import LoRAConfig
from leanpo_jax.train import adapter_checkpoints as ac
from leanpo_jax.train import checkpoint as ckpt_lib
from leanpo_jax.train import state as state_lib


def _host(x):
    return np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


def test_adapter_only_round_trip_and_base_check(tmp_path):
    base = get_preset("tiny")
    config = base.replace(text=dataclasses.replace(base.text, vocab_size=512), lora=LoRAConfig(rank=2))
    model_def, state = state_lib.init_state(VideoLLM(config, rngs=nnx.Rngs(0)), dict(
        learning_rate=1e-3, schedule="constant", warmup_ratio=0.0, total_steps=4), 0)
    saved = ac.saved_part(state, model_def)
    assert set(saved.params) == {"trainable"}
    n_saved, n_all = (sum(x.size for x in jax.tree.leaves(t)) for t in (saved, state))
    assert n_saved < n_all / 10  # adapters + two Adam moments; the base, most of the state, is not stored
    ckpt = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1, async_save=False)
    ckpt.save(1, saved, data_state={}, meta={ac.FINGERPRINT_KEY: ac.base_fingerprint(None, 0, config)})
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), saved)
    restored, _, meta = ckpt.restore(abstract, 1)
    full = ac.with_frozen(restored, state, model_def)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(full)):
        np.testing.assert_array_equal(_host(a), _host(b))
    ac.check_base(meta, ac.base_fingerprint(None, 0, config), "here")  # the same base: fine
    with pytest.raises(ValueError, match="trained on another base model"):
        ac.check_base(meta, ac.base_fingerprint(None, 1, config), "here")  # another seed
    # The rank is not part of the base.
    assert ac.base_fingerprint(None, 0, config) == ac.base_fingerprint(None, 0, config.replace(lora=LoRAConfig(rank=8)))
    ckpt.close()


def test_a_lora_base_can_be_kept_in_bfloat16():
    import jax.numpy as jnp

    base = get_preset("tiny")
    config = base.replace(text=dataclasses.replace(base.text, vocab_size=512), lora=LoRAConfig(rank=2))
    _, trainable, frozen = state_lib.split_model(VideoLLM(config, rngs=nnx.Rngs(0)))
    state = state_lib.initial_state(trainable, frozen, dict(learning_rate=1e-3, schedule="constant",
                                                            warmup_ratio=0.0, total_steps=4), 0,
                                    frozen_dtype=jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(state.params["frozen"])} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(state.params["trainable"])} == {jnp.dtype(jnp.float32)}
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(state.params["frozen"])):
        np.testing.assert_array_equal(np.asarray(a[...], np.float32).astype(jnp.bfloat16), np.asarray(b))
