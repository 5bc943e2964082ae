"""LoRA adapters in the decoder: B = 0 is the base model exactly, random A / B equal the base
model with W + scale·A·B merged in float64 NumPy, gradients reach A / B only, target semantics
(leaf names, regex, nothing matched) and the PEFT initialisation bounds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models import TextConfig
from leanpo_jax.models import lora as lora_lib
from leanpo_jax.models.qwen2 import Qwen2

CONFIG = TextConfig(vocab_size=500, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
                    num_kv_heads=2, head_dim=8, rope_theta=1e6, rms_norm_eps=1e-6, attention_bias=True,
                    tie_word_embeddings=True)
IDS = np.random.default_rng(0).integers(1, 500, (2, 7)).astype(np.int32)


def forward(model):
    return np.asarray(model(model.embed(jnp.asarray(IDS))))


def with_random_b(model, seed=1):
    """Non-zero B (a fresh adapter's is 0) on every adapter."""
    state = nnx.state(model, lora_lib.LoRAParam)
    flat = dict(nnx.to_flat_state(state))
    keys = jax.random.split(jax.random.key(seed), len(flat))
    for key, (path, var) in zip(keys, sorted(flat.items())):
        if path[-1].endswith("_lora_b"):
            var.set_value(0.3 * jax.random.normal(key, var.shape, jnp.float32))
    nnx.update(model, nnx.from_flat_state(flat))
    return model


@pytest.fixture(scope="module")
def base():
    return Qwen2(CONFIG, rngs=nnx.Rngs(0))


def test_fresh_adapters_leave_the_model_unchanged(base):
    adapted = Qwen2(CONFIG, rngs=nnx.Rngs(0), lora=lora_lib.LoRAConfig(rank=4, alpha=8.0))
    nnx.update(adapted, nnx.state(base, nnx.Param))  # same base weights (the adapters draw rng too)
    assert len(jax.tree.leaves(nnx.state(adapted, lora_lib.LoRAParam))) == 2 * 7
    np.testing.assert_array_equal(forward(adapted), forward(base))


@pytest.mark.parametrize("rslora", [False, True])
def test_adapted_forward_equals_the_float64_merged_weights(base, rslora):
    cfg = lora_lib.LoRAConfig(rank=4, alpha=8.0, use_rslora=rslora, target_modules=r".*layers\.[02]\..*_proj")
    adapted = Qwen2(CONFIG, rngs=nnx.Rngs(0), lora=cfg)
    nnx.update(adapted, nnx.state(base, nnx.Param))
    with_random_b(adapted)
    scale = 8.0 / (2.0 if rslora else 4.0)
    assert cfg.scale == scale
    merged = Qwen2(CONFIG, rngs=nnx.Rngs(0))
    nnx.update(merged, nnx.state(base, nnx.Param))
    layers = adapted.layers
    for name, (_, n_in) in lora_lib.PROJECTIONS.items():
        w = np.asarray(getattr(layers, name)[...], np.float64)
        a = np.asarray(getattr(layers, f"{name}_lora_a")[...], np.float64)
        b = np.asarray(getattr(layers, f"{name}_lora_b")[...], np.float64)
        for layer in (0, 2):  # the regex adapts layers 0 and 2 only; layer 1's scale is 0
            ins = w.shape[1:1 + n_in]
            delta = a[layer].reshape(math.prod(ins), -1) @ b[layer].reshape(b.shape[1], -1)
            w[layer] += scale * delta.reshape(w.shape[1:])
        np.testing.assert_array_equal(np.asarray(getattr(layers, f"{name}_lora_scale")[...]), [scale, 0, scale])
        getattr(merged.layers, name).set_value(jnp.asarray(w, jnp.float32))
    got, want = forward(adapted), forward(merged)
    assert np.abs(got - forward(base)).max() > 1e-2  # the adapters do change the output
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_gradients_reach_only_the_adapters_of_targeted_layers(base):
    adapted = with_random_b(Qwen2(CONFIG, rngs=nnx.Rngs(0), lora=lora_lib.LoRAConfig(
        rank=2, target_modules=r"model\.layers\.1\.(self_attn\.q_proj|mlp\.down_proj)")))
    graphdef, adapters, rest = nnx.split(adapted, lora_lib.LoRAParam, ...)

    def loss(adapters):
        model = nnx.merge(graphdef, adapters, rest)
        return jnp.sum(model(model.embed(jnp.asarray(IDS))) ** 2)

    grads = dict(nnx.to_flat_state(jax.grad(loss)(adapters)))
    assert sorted(p[-1] for p in grads) == ["down_kernel_lora_a", "down_kernel_lora_b", "q_kernel_lora_a",
                                            "q_kernel_lora_b"]
    for path, g in grads.items():
        g = np.asarray(g[...])
        assert np.abs(g[1]).max() > 0 and not g[0].any() and not g[2].any(), path  # layer 1 only


def test_target_modules_semantics():
    names = lambda cfg: sorted(lora_lib.resolve_targets(cfg, 2, "model.language_model."))  # noqa: E731
    assert names(lora_lib.LoRAConfig(rank=1)) == sorted(lora_lib.PROJECTIONS)  # default: every linear
    assert names(lora_lib.LoRAConfig(rank=1, target_modules=("q_proj", "v_proj"))) == ["q_kernel", "v_kernel"]
    assert names(lora_lib.LoRAConfig(rank=1, target_modules=("self_attn.o_proj",))) == ["o_kernel"]
    assert names(lora_lib.LoRAConfig(rank=1, target_modules=r".*\.mlp\..*")) == ["down_kernel", "gate_kernel",
                                                                                   "up_kernel"]
    mask = lora_lib.resolve_targets(lora_lib.LoRAConfig(rank=1, target_modules=r".*layers\.1\.self_attn\.k_proj"),
                                    2, "model.")
    np.testing.assert_array_equal(mask["k_kernel"], [False, True])
    with pytest.raises(ValueError, match=r"matches no linear layer.*model\.language_model\.layers\.0\.self_attn\.q_proj"):
        lora_lib.resolve_targets(lora_lib.LoRAConfig(rank=1, target_modules="q_proj"), 2, "model.language_model.")
    with pytest.raises(ValueError, match="matches no linear layer"):
        lora_lib.resolve_targets(lora_lib.LoRAConfig(rank=1, target_modules=("qkv",)), 2, "model.")
    with pytest.raises(ValueError, match=r"model.lora.dropout=1.0: expected a rate in \[0, 1\)"):
        lora_lib.LoRAConfig(rank=1, dropout=1.0)


def test_dropout_drops_the_adapter_input_only_and_only_in_its_context(base):
    rate, key = 0.5, jax.random.key(7)
    # One projection against float64 NumPy: x W + scale · (mask ∘ x / (1 - p)) A B.
    rng = np.random.default_rng(2)
    p = {"up_kernel": rng.normal(size=(32, 48)), "up_kernel_lora_a": rng.normal(size=(32, 4)),
         "up_kernel_lora_b": rng.normal(size=(4, 48)), "up_kernel_lora_scale": np.float64(2.0)}
    x = rng.normal(size=(2, 5, 32))
    got = lora_lib.project({k: jnp.asarray(v, jnp.float32) for k, v in p.items()}, "up_kernel",
                           jnp.asarray(x, jnp.float32), "btd,df->btf", (key, rate))
    keep = np.asarray(jax.random.bernoulli(lora_lib.dropout_key_of(key, "up_kernel"), 1 - rate, x.shape))
    assert 0.3 < keep.mean() < 0.7
    want = x @ p["up_kernel"] + 2.0 * (np.where(keep, x / (1 - rate), 0) @ p["up_kernel_lora_a"]) @ p["up_kernel_lora_b"]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)
    # A decoder: B = 0 drops nothing visible; with B != 0 only inside adapter_dropout, the same
    # key gives the same output, and each run inside the context draws new masks.
    fresh = Qwen2(CONFIG, rngs=nnx.Rngs(0), lora=lora_lib.LoRAConfig(rank=4, alpha=8.0, dropout=rate))
    nnx.update(fresh, nnx.state(base, nnx.Param))
    with lora_lib.adapter_dropout(key):
        np.testing.assert_array_equal(forward(fresh), forward(base))
    adapted = with_random_b(fresh)
    plain = forward(adapted)
    with lora_lib.adapter_dropout(key):
        first, second = forward(adapted), forward(adapted)
    with lora_lib.adapter_dropout(key):
        again = forward(adapted)
    assert np.abs(first - plain).max() > 1e-2 and np.abs(first - second).max() > 1e-2
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(forward(adapted), plain)  # the context is closed: no dropout
    no_drop = Qwen2(CONFIG, rngs=nnx.Rngs(0), lora=lora_lib.LoRAConfig(rank=4, alpha=8.0))
    nnx.update(no_drop, nnx.state(adapted))
    with lora_lib.adapter_dropout(key):
        np.testing.assert_array_equal(forward(no_drop), plain)  # rate 0 never drops


def test_a_is_drawn_like_peft_and_b_starts_at_zero():
    model = Qwen2(CONFIG, rngs=nnx.Rngs(3), lora=lora_lib.LoRAConfig(rank=8))
    a = np.asarray(model.layers.o_kernel_lora_a[...])  # fan_in = 4 heads x 8 = 32
    assert a.shape == (3, 4, 8, 8) and a.dtype == np.float32
    assert np.abs(a).max() <= 1 / math.sqrt(32) and np.abs(a).max() > 0.9 / math.sqrt(32)
    assert not np.asarray(model.layers.down_kernel_lora_b[...]).any()
    assert model.layers.q_kernel_lora_a.out_sharding == ("layers", "embed", None)
    assert model.layers.q_kernel_lora_b.out_sharding == ("layers", None, "heads", "head_dim")


def test_a_checkpoint_loads_under_fresh_adapters(tmp_path):
    """model.init_from + model.lora: the base weights from the folder, A drawn, B = 0 (so the
    loaded model computes what the checkpoint does)."""
    from leanpo_jax.models import resolve_model, save_hf
    from leanpo_jax.models.runtime import lora_config, model_source
    import ml_collections

    saved = resolve_model("tiny").build(5)
    save_hf(saved, str(tmp_path / "ckpt"))
    block = ml_collections.ConfigDict({"preset": "", "init_from": str(tmp_path / "ckpt"), "dtype": "float32",
                                       "attention_impl": "xla", "remat": False, "vocab_size": 0,
                                       "lora": {"rank": 2, "alpha": 4.0, "dropout": 0.0, "use_rslora": False,
                                                "target_modules": "q_proj, v_proj"}})
    assert lora_config(block.lora).target_modules == ("q_proj", "v_proj")
    assert lora_config(ml_collections.ConfigDict({"rank": 2, "alpha": 4.0, "dropout": 0.0, "use_rslora": False,
                                                  "target_modules": r".*\.q_proj"})).target_modules == r".*\.q_proj"
    model = model_source(block, "cpu").load(seed=1)
    lm = model.language_model
    assert lm.lora.rank == 2 and not np.asarray(lm.layers.q_kernel_lora_b[...]).any()
    assert np.abs(np.asarray(lm.layers.v_kernel_lora_a[...])).max() > 0 and not hasattr(lm.layers, "k_kernel_lora_a")
    ids = jnp.asarray(IDS % 100)
    np.testing.assert_array_equal(np.asarray(model(ids)), np.asarray(saved(ids)))


def test_kv_cache_decoding_with_adapters_equals_the_merged_model(base):
    """Generation runs the adapters through prefill and decode_step; merged weights give the same."""
    from leanpo_jax.models import peft_io

    def adapted_copy():
        model = Qwen2(CONFIG, rngs=nnx.Rngs(0), lora=lora_lib.LoRAConfig(rank=4, alpha=8.0))
        nnx.update(model, nnx.state(base, nnx.Param))
        return with_random_b(model)

    adapted, merged = adapted_copy(), adapted_copy()
    peft_io.merge_adapters(merged)
    assert merged.lora is None and not hasattr(merged.layers, "q_kernel_lora_a")
    outs = []
    for model in (adapted, merged):
        hidden, cache = model.prefill(model.embed(jnp.asarray(IDS)), max_len=IDS.shape[1] + 2)
        steps = [hidden[:, -1]]
        for token in (5, 6):
            h, cache = model.decode_step(model.embed(jnp.full((2, 1), token, jnp.int32)), cache)
            steps.append(h[:, -1])
        outs.append(np.stack([np.asarray(s) for s in steps]))
    assert np.abs(outs[0] - forward(base)[:, -1][None]).max() > 1e-2
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5, rtol=0)
