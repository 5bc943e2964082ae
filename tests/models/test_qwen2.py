"""Qwen2/Llama decoder: parity with transformers' torch models, shared prefix + suffix (values and
gradients), KV-cache decoding, explicit masks, HF state-dict round trips, logical axes.

All fp32 on CPU with tiny random configs; compiled functions are shared by module fixtures.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models.attention import attend, repeat_cache
from leanpo_jax.models import TextConfig, VideoLLMConfig
from leanpo_jax.models.qwen2 import Qwen2
from leanpo_jax.models.qwen2_hf import export_hf_state_dict, load_hf_state_dict

VOCAB = 1000


def text_config(arch="qwen2", tied=True):
    return TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=16, rope_theta=1e6 if arch == "qwen2" else 1e4,
        rms_norm_eps=1e-6, attention_bias=arch == "qwen2", tie_word_embeddings=tied,
    )


def random_model(config, *, remat=False, seed=0):
    """Seeded init plus noise on every parameter, so norms and biases are non-trivial."""
    model = Qwen2(config, rngs=nnx.Rngs(seed), remat=remat)
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, noisy))
    return model


def right_padded(rng, lengths, width):
    """Random ids [B, width] and mask; pad slots hold random junk ids so masking must matter."""
    ids = rng.integers(1, VOCAB, size=(len(lengths), width)).astype(np.int32)
    mask = np.arange(width)[None, :] < np.asarray(lengths)[:, None]
    return ids, mask


# ------------------------------------------------------------------------------- torch parity
def torch_reference(arch, tied):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    c = text_config(arch, tied)
    common = dict(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads, rms_norm_eps=c.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=tied, attn_implementation="eager",
    )
    if arch == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            **common, attention_bias=False, head_dim=c.head_dim))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif "embed_tokens" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.06 * noise)
    model.eval()
    return c, model, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "arch,tied", [("qwen2", True), ("qwen2", False), ("llama", False)],
    ids=["qwen2-tied", "qwen2-untied", "llama-untied"])
def test_hf_parity_and_round_trip(arch, tied):
    import torch

    c, torch_model, state_dict = torch_reference(arch, tied)
    model = Qwen2(c, rngs=nnx.Rngs(0))
    used = load_hf_state_dict(model, state_dict)
    expected_unused = {"lm_head.weight"} if tied else set()
    assert set(state_dict) - used == expected_unused

    exported = export_hf_state_dict(model)
    assert set(exported) == set(state_dict) - expected_unused
    for key, value in exported.items():
        np.testing.assert_array_equal(value, state_dict[key], err_msg=key)

    lengths = (12, 9, 5)
    ids, mask = right_padded(np.random.default_rng(0), lengths, 12)
    with torch.no_grad():
        ref = torch_model(input_ids=torch.from_numpy(ids).long(),
                          attention_mask=torch.from_numpy(mask).long()).logits.numpy()

    graphdef, state = nnx.split(model)

    @jax.jit
    def logits(state, ids, mask):
        m = nnx.merge(graphdef, state)
        e = m.embed(ids)
        head = m.lm_head_kernel()
        return m(e, mask=mask) @ head, m(e) @ head  # explicit mask / plain causal

    masked, causal = logits(state, ids, mask)
    for name, got in (("masked", masked), ("causal", causal)):
        err = max(float(np.abs(np.asarray(got)[b, :n] - ref[b, :n]).max())
                  for b, n in enumerate(lengths))
        print(f"{arch} tied={tied} {name}: max |logits - torch| = {err:.2e}")
        assert err <= 1e-4, (name, err)


# ------------------------------------------------------------------------ shared prefix + suffix
P, S = 8, 4


@pytest.fixture(scope="module")
def base_model():
    """One random Qwen2 (untied head, non-trivial norms and biases) shared by the tests below."""
    return random_model(text_config("qwen2", tied=False), seed=3)


def layout(bp, b2):
    """Right-padded prompts [bp, P] of different true lengths, b2 = g * bp suffix rows of S
    tokens (row r continues prompt r // g), and the naive layout [b2, P + S] that carries a copy
    of its prompt in every row."""
    g, rng = b2 // bp, np.random.default_rng(bp * 10 + b2)
    lengths = (P, 5, 3)[:bp]
    prompt, pmask = right_padded(rng, lengths, P)
    tokens = rng.integers(1, VOCAB, size=(b2, S)).astype(np.int32)
    row_len = np.repeat(np.asarray(lengths), g)
    full = rng.integers(1, VOCAB, size=(b2, P + S)).astype(np.int32)
    for r in range(b2):
        full[r, :row_len[r]] = prompt[r // g, :row_len[r]]
        full[r, row_len[r]:row_len[r] + S] = tokens[r]
    return dict(
        prompt=prompt, pmask=pmask, tokens=tokens, full=full,
        positions=(row_len[:, None] + np.arange(S)).astype(np.int32),
        fmask=np.arange(P + S)[None, :] < (row_len + S)[:, None],
        weights=rng.normal(size=(b2, S, 64)).astype(np.float32),
        targets=rng.integers(0, VOCAB, size=(b2, S, 1)),
    )


def shared_hidden(m, d):
    _, kv = m.prefix(m.embed(d["prompt"]), mask=d["pmask"])
    return m.suffix(m.embed(d["tokens"]), d["positions"], kv, kv_mask=d["pmask"])


def packed_hidden(m, d):
    return m.packed(m.embed(d["prompt"]), m.embed(d["tokens"]), d["positions"], kv_mask=d["pmask"])[1]


SHARED_FORMS = {"prefix+suffix": shared_hidden, "packed": packed_hidden}


def naive_hidden(m, d):
    h = m(m.embed(d["full"]), mask=d["fmask"])
    return jnp.take_along_axis(h, d["positions"][:, :, None], axis=1)


def loss_and_grad(graphdef, state, hidden_fn, d):
    def loss(st):  # a linear probe plus target log-probs, so the head gets gradient too
        m = nnx.merge(graphdef, st)
        h = hidden_fn(m, d)
        logps = jax.nn.log_softmax(h @ m.lm_head_kernel())
        return jnp.sum(h * d["weights"]) + jnp.sum(
            jnp.take_along_axis(logps, d["targets"], axis=-1)), h
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(state)


@pytest.fixture(scope="module")
def naive_pairs(base_model):
    """Loss, hidden and gradients of the naive duplicated layout for 2 prompts x 2 responses."""
    d = layout(2, 4)
    return d, loss_and_grad(*nnx.split(base_model), naive_hidden, d)


@pytest.mark.parametrize("form", list(SHARED_FORMS))
@pytest.mark.parametrize("remat", [False, True], ids=["remat-off", "remat-on"])
def test_shared_prefix_pairs_match_naive_values_and_grads(base_model, naive_pairs, remat, form):
    """Pairs layout (one prefix per 2 suffix rows, prompts of true lengths 8 and 5): prefix +
    suffix, and the packed single pass, equal the full forward on [prompt ‖ tokens], hidden
    states and the gradients of a scalar of them w.r.t. every parameter (both suffix rows'
    gradients add up in the prefix)."""
    d, ((loss_n, h_n), grad_n) = naive_pairs
    model = nnx.clone(base_model)
    model.remat = remat
    graphdef, state = nnx.split(model)
    shared = SHARED_FORMS[form]
    (loss_s, h_s), grad_s = loss_and_grad(graphdef, state, shared, d)
    err = float(jnp.abs(h_s - h_n).max())
    print(f"pairs remat={remat}: max |hidden diff| = {err:.2e}")
    assert err < 1e-5
    np.testing.assert_allclose(loss_s, loss_n, atol=1e-4)  # a sum of ~4*S*64 terms
    flat_s, flat_n = nnx.to_flat_state(grad_s), nnx.to_flat_state(grad_n)
    assert [p for p, _ in flat_s] == [p for p, _ in flat_n]
    worst = 0.0
    for (path, gs), (_, gn) in zip(flat_s, flat_n):
        gs, gn = np.asarray(gs[...]), np.asarray(gn[...])
        assert np.abs(gs).max() > 0, path  # every parameter receives gradient
        worst = max(worst, float(np.abs(gs - gn).max() / np.abs(gn).max()))
    print(f"  max |grad diff| / max |grad| = {worst:.2e}")
    assert worst < 1e-4
    jaxpr = str(jax.make_jaxpr(lambda st: shared(nnx.merge(graphdef, st), d))(state))
    assert ("remat" in jaxpr) == remat


@pytest.mark.parametrize("form", list(SHARED_FORMS))
@pytest.mark.parametrize("bp,b2", [(2, 2), (1, 3)], ids=["one-prefix-per-row", "bp1-to-3-rows"])
def test_shared_prefix_other_layouts_match_naive(base_model, bp, b2, form):
    d = layout(bp, b2)
    graphdef, state = nnx.split(base_model)
    run = jax.jit(lambda st: (SHARED_FORMS[form](nnx.merge(graphdef, st), d),
                              naive_hidden(nnx.merge(graphdef, st), d)))
    h_s, h_n = run(state)
    err = float(jnp.abs(h_s - h_n).max())
    print(f"bp={bp} b2={b2}: max |hidden diff| = {err:.2e}")
    assert err < 1e-5


# --------------------------------------------------------------------------------- KV cache
@pytest.fixture(scope="module")
def qwen_fns(base_model):
    """Jitted full forward, prefill, decode step, prefix and suffix of `base_model`."""
    graphdef, state = nnx.split(base_model)

    @jax.jit
    def full_logits(state, ids, mask):
        m = nnx.merge(graphdef, state)
        return m(m.embed(ids), mask=mask) @ m.lm_head_kernel()

    @jax.jit
    def prefill(state, ids, mask, max_len=16):
        m = nnx.merge(graphdef, state)
        h, cache = m.prefill(m.embed(ids), mask=mask, max_len=max_len)
        return h @ m.lm_head_kernel(), cache

    @jax.jit
    def decode(state, cache, token):
        m = nnx.merge(graphdef, state)
        h, cache = m.decode_step(m.embed(token[:, None]), cache)
        return (h @ m.lm_head_kernel())[:, 0], cache

    @jax.jit
    def suffix(state, tokens, positions, kv, kv_mask, mask=None):
        m = nnx.merge(graphdef, state)
        return m.suffix(m.embed(tokens), positions, kv, kv_mask=kv_mask, mask=mask)

    @jax.jit
    def empty_cache_then_decode(state, ids, token):
        """init_cache + decode_step over a whole (unpadded) prompt, then one token."""
        m = nnx.merge(graphdef, state)
        _, cache = m.decode_step(m.embed(ids), m.init_cache(ids.shape[0], 16))
        h, cache = m.decode_step(m.embed(token[:, None]), cache)
        return (h @ m.lm_head_kernel())[:, 0], cache

    @jax.jit
    def prefix_kv(state, ids):
        m = nnx.merge(graphdef, state)
        return m.prefix(m.embed(ids))[1]

    return dict(state=state, full=full_logits, prefill=prefill, decode=decode, suffix=suffix,
                prefix_kv=prefix_kv, empty_cache_then_decode=empty_cache_then_decode)


def test_greedy_decode_matches_full_forward(qwen_fns):
    f, state = qwen_fns, qwen_fns["state"]
    lengths, steps, width = np.array([6, 3]), 6, 16
    prompt, pmask = right_padded(np.random.default_rng(7), lengths, 6)
    seq = np.zeros((2, width), np.int32)
    seq[:, :6] = np.where(pmask, prompt, 0)
    logits, cache = f["prefill"](state, prompt, pmask)
    np.testing.assert_array_equal(cache.index, lengths)
    last = np.asarray(logits)[np.arange(2), lengths - 1]
    cur, worst = lengths.copy(), 0.0
    for _ in range(steps):
        token = last.argmax(-1).astype(np.int32)
        seq[np.arange(2), cur] = token
        cur = cur + 1
        step_logits, cache = f["decode"](state, cache, token)
        ref = np.asarray(f["full"](state, seq, np.arange(width)[None] < cur[:, None]))
        ref = ref[np.arange(2), cur - 1]
        worst = max(worst, float(np.abs(np.asarray(step_logits) - ref).max()))
        np.testing.assert_array_equal(np.asarray(step_logits).argmax(-1), ref.argmax(-1))
        last = np.asarray(step_logits)
    print(f"decode vs full forward: max |logits diff| over {steps} steps = {worst:.2e}")
    assert worst < 1e-4
    np.testing.assert_array_equal(cache.index, lengths + steps)
    np.testing.assert_array_equal(cache.position, lengths + steps)


def test_repeated_cache_decodes_like_its_source(qwen_fns):
    """One prefill tiled to 2 samples per prompt decodes exactly like the untiled cache."""
    f, state = qwen_fns, qwen_fns["state"]
    prompt, pmask = right_padded(np.random.default_rng(8), (5, 2), 6)
    _, cache = f["prefill"](state, prompt, pmask)
    token = np.array([11, 12], np.int32)
    one, _ = f["decode"](state, cache, token)
    two, _ = f["decode"](state, repeat_cache(cache, 2), np.repeat(token, 2))
    np.testing.assert_allclose(np.asarray(two), np.repeat(np.asarray(one), 2, axis=0), atol=1e-6)


def test_init_cache_then_decode_equals_prefill(qwen_fns):
    f, state = qwen_fns, qwen_fns["state"]
    prompt, pmask = right_padded(np.random.default_rng(10), (6, 6), 6)
    token = np.array([21, 22], np.int32)
    _, cache = f["prefill"](state, prompt, pmask)
    want, want_cache = f["decode"](state, cache, token)
    got, got_cache = f["empty_cache_then_decode"](state, prompt, token)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    for a, b in zip(got_cache[2:], want_cache[2:]):  # valid, index, position
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------- masks
def test_suffix_attends_to_every_valid_prefix_key(qwen_fns):
    """The first suffix token sees all valid prefix keys (is_causal's top-left alignment would
    let it see only key 0) and none of the masked ones."""
    f, state = qwen_fns, qwen_fns["state"]
    prompt = np.random.default_rng(9).integers(1, VOCAB, size=(1, 6)).astype(np.int32)
    kv_mask = np.arange(6)[None] < 4
    tokens = np.array([[5, 6, 7]], np.int32)
    positions = np.array([[4, 5, 6]], np.int32)
    kv = f["prefix_kv"](state, prompt)
    base = np.asarray(f["suffix"](state, tokens, positions, kv, kv_mask))
    for j in range(6):
        bumped = kv._replace(k=kv.k.at[:, :, j].add(1.0))
        diff = np.abs(np.asarray(f["suffix"](state, tokens, positions, bumped, kv_mask)) - base)
        if j < 4:
            assert diff[0, 0].max() > 1e-3, f"prefix key {j} ignored by the first suffix token"
        else:
            assert diff.max() == 0.0, f"masked prefix key {j} leaked into the suffix"


def test_suffix_own_key_mask_hides_padding(qwen_fns):
    """A left-padded suffix row: with the own-key mask, the pad token influences nothing."""
    f, state = qwen_fns, qwen_fns["state"]
    prompt = np.random.default_rng(11).integers(1, VOCAB, size=(1, 6)).astype(np.int32)
    kv = f["prefix_kv"](state, prompt)
    kv_mask, own = np.ones((1, 6), bool), np.array([[False, True, True]])
    positions = np.array([[6, 6, 7]], np.int32)  # the pad slot's position is irrelevant
    outs = [np.asarray(f["suffix"](state, np.array([[pad, 8, 9]], np.int32), positions, kv,
                                   kv_mask, own)) for pad in (3, 4)]
    np.testing.assert_array_equal(outs[0][:, 1:], outs[1][:, 1:])


def test_attend_refuses_causal_with_unequal_lengths():
    q = jnp.ones((1, 2, 4, 8))
    kv = jnp.ones((1, 5, 2, 8))
    with pytest.raises(ValueError, match="top-left"):
        attend(q, kv, kv, None, None)


# ------------------------------------------------------------------------ parameters / axes
def test_parameter_tree_and_logical_axes():
    c = text_config("qwen2", tied=False)
    model = Qwen2.from_config(VideoLLMConfig(text=c), rngs=nnx.Rngs(0))
    L, D, N, K, hd, F, V = 2, 64, 4, 2, 16, 128, VOCAB
    expected = {
        ("embed_tokens",): ((V, D), ("vocab", "embed")),
        ("final_norm",): ((D,), ("norm",)),
        ("lm_head",): ((D, V), ("embed", "vocab")),
        ("layers", "input_norm"): ((L, D), ("layers", "norm")),
        ("layers", "post_norm"): ((L, D), ("layers", "norm")),
        ("layers", "q_kernel"): ((L, D, N, hd), ("layers", "embed", "heads", "head_dim")),
        ("layers", "q_bias"): ((L, N, hd), ("layers", "heads", "head_dim")),
        ("layers", "k_kernel"): ((L, D, K, hd), ("layers", "embed", "kv_heads", "head_dim")),
        ("layers", "k_bias"): ((L, K, hd), ("layers", "kv_heads", "head_dim")),
        ("layers", "v_kernel"): ((L, D, K, hd), ("layers", "embed", "kv_heads", "head_dim")),
        ("layers", "v_bias"): ((L, K, hd), ("layers", "kv_heads", "head_dim")),
        ("layers", "o_kernel"): ((L, N, hd, D), ("layers", "heads", "head_dim", "embed")),
        ("layers", "gate_kernel"): ((L, D, F), ("layers", "embed", "mlp")),
        ("layers", "up_kernel"): ((L, D, F), ("layers", "embed", "mlp")),
        ("layers", "down_kernel"): ((L, F, D), ("layers", "mlp", "embed")),
    }
    got = {path: (var[...].shape, var.get_metadata()["out_sharding"])
           for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert got == expected
    llama = Qwen2(text_config("llama", tied=True), rngs=nnx.Rngs(0))
    names = {path for path, _ in nnx.to_flat_state(nnx.state(llama, nnx.Param))}
    assert names == set(expected) - {("lm_head",), ("layers", "q_bias"), ("layers", "k_bias"),
                                     ("layers", "v_bias")}


def test_builds_sharded_under_a_mesh_with_logical_rules():
    """Under a mesh + logical rules the Params come out sharded (built under jit, as a sharded
    init would be)."""
    mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = (("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("vocab", "tensor"),
             ("kv_heads", None), ("head_dim", None), ("layers", None), ("norm", None))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        model = nnx.jit(lambda: Qwen2(text_config("qwen2", tied=True), rngs=nnx.Rngs(0)))()
    spec = jax.sharding.PartitionSpec
    for array, expected in ((model.layers.q_kernel[...], spec(None, "fsdp", "tensor", None)),
                            (model.embed_tokens[...], spec("tensor", "fsdp")),
                            (model.layers.down_kernel[...], spec(None, "tensor", "fsdp"))):
        want = jax.sharding.NamedSharding(mesh, expected)
        assert array.sharding.is_equivalent_to(want, array.ndim), (array.sharding, expected)
