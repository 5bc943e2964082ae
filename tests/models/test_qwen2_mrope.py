"""M-RoPE in the shared Qwen2 decoder (Qwen2-VL / Qwen2.5-VL text model): parity with
transformers' Qwen2VLTextModel on random [B, 3, T] positions, packed == prefix + suffix with a
3-axis prompt table, prefill + decode_step == the full forward at the continued positions, and
[B, T] / equal-axes positions reducing to plain RoPE bit for bit.

Tiny fp32 config (head_dim 16, mrope_section (2, 3, 3): 2 t, 3 h, 3 w frequencies) on CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models import TextConfig
from leanpo_jax.models.attention import apply_rope, mrope_axis_of_frequency
from leanpo_jax.models.qwen2 import Qwen2
from leanpo_jax.models.qwen2_hf import load_hf_state_dict

VOCAB, SECTION = 1000, (2, 3, 3)
CONFIG = TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                    num_kv_heads=2, rope_theta=1e6, rms_norm_eps=1e-6, attention_bias=True,
                    tie_word_embeddings=True, mrope_section=SECTION)


def table(rng, lengths, width):
    """A [B, 3, width] table shaped like a real prompt's: text 0 1 2, then from column 3 a
    block of up to 8 tokens j whose axes differ (t = 3 + 2 (j // 4), h = 3 + (j // 2) % 2,
    w = 3 + j % 2), then text resuming at the block's max + 1; pad columns hold junk."""
    out = rng.integers(0, 300, size=(len(lengths), 3, width))
    for b, n in enumerate(lengths):
        j = np.arange(min(n, 11) - 3)
        block = 3 + np.stack([2 * (j // 4), (j // 2) % 2, j % 2])
        text = block.max() + 1 + np.arange(n - 11 if n > 11 else 0)
        out[b, :, :n] = np.concatenate([np.tile(np.arange(3), (3, 1)), block, np.tile(text, (3, 1))], axis=1)
    return out.astype(np.int32)


@pytest.fixture(scope="module")
def reference():
    """transformers' Qwen2VLTextModel with noisy weights, and our decoder loaded from it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    c = CONFIG
    hf = transformers.Qwen2VLTextConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
        rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta, "mrope_section": list(SECTION)})
    hf._attn_implementation = "eager"
    torch_model = transformers.Qwen2VLTextModel(hf).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in torch_model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else (0.1 if name.endswith("bias") else
                    0.5 if "embed" in name else 0.06) * noise)
    state_dict = {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}
    model = Qwen2(c, rngs=nnx.Rngs(0))
    assert load_hf_state_dict(model, state_dict, prefix="", lm_head_key=None) == set(state_dict)
    return torch_model, model


def test_mrope_matches_transformers_qwen2vl_text_model(reference):
    """Random independent t/h/w positions (right-padded rows): hidden and tied-head logits."""
    import torch

    torch_model, model = reference
    rng = np.random.default_rng(1)
    lengths, width = (10, 7), 10
    ids = rng.integers(1, VOCAB, size=(2, width)).astype(np.int32)
    mask = np.arange(width)[None] < np.asarray(lengths)[:, None]
    positions = rng.integers(0, 400, size=(2, 3, width)).astype(np.int32)
    with torch.no_grad():
        ref = torch_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                          position_ids=torch.from_numpy(positions).long().permute(1, 0, 2)).last_hidden_state
    ref = ref.numpy().astype(np.float64)
    ref_logits = ref @ state_embed(torch_model).T
    hidden = model(model.embed(ids), positions, mask)
    logits = np.asarray(hidden @ model.lm_head_kernel())
    h_err = max(float(np.abs(np.asarray(hidden)[b, :n] - ref[b, :n]).max()) for b, n in enumerate(lengths))
    l_err = max(float(np.abs(logits[b, :n] - ref_logits[b, :n]).max()) for b, n in enumerate(lengths))
    print(f"M-RoPE vs transformers: max |hidden diff| = {h_err:.2e}, max |logits diff| = {l_err:.2e}")
    assert h_err <= 1e-4 and l_err <= 1e-4
    # The axes really differ in effect: text positions (t on every axis) give other hidden states.
    text_only = np.asarray(model(model.embed(ids), positions[:, 0], mask))
    assert np.abs(text_only - np.asarray(hidden))[0].max() > 1e-2


def state_embed(torch_model) -> np.ndarray:
    return torch_model.embed_tokens.weight.detach().numpy().astype(np.float64)


def test_axis_of_frequency_and_text_positions_are_plain_rope():
    """(2, 3, 3) on 8 frequencies: [t t h h h w w w]; equal axes == [B, T] == plain RoPE exactly."""
    np.testing.assert_array_equal(mrope_axis_of_frequency(SECTION, 16), [0, 0, 1, 1, 1, 2, 2, 2])
    with pytest.raises(ValueError, match="sums to 8, not head_dim / 2 = 16"):
        mrope_axis_of_frequency(SECTION, 32)
    x = jax.random.normal(jax.random.key(0), (2, 5, 3, 16))
    pos = jnp.asarray(np.random.default_rng(2).integers(0, 9000, (2, 5)), jnp.int32)
    plain = apply_rope(x, pos, 1e6)
    np.testing.assert_array_equal(apply_rope(x, pos, 1e6, mrope_section=SECTION), plain)
    three = jnp.broadcast_to(pos[:, None], (2, 3, 5))
    np.testing.assert_array_equal(apply_rope(x, three, 1e6, mrope_section=SECTION), plain)
    with pytest.raises(ValueError, match="no mrope_section"):
        apply_rope(x, three, 1e6)


@pytest.fixture(scope="module")
def fns(reference):
    """Jitted prefix / suffix / packed / full logits / prefill / decode of the loaded model."""
    graphdef, state = nnx.split(reference[1])
    m = lambda st: nnx.merge(graphdef, st)  # noqa: E731

    @jax.jit
    def shared(st, prompt, pos, pmask, tokens, rpos):
        mm = m(st)
        _, kv = mm.prefix(mm.embed(prompt), pos, pmask)
        suffix = mm.suffix(mm.embed(tokens), rpos, kv, kv_mask=pmask)
        packed = mm.packed(mm.embed(prompt), mm.embed(tokens), rpos, kv_mask=pmask, prompt_positions=pos)[1]
        return suffix, packed

    @jax.jit
    def full(st, ids, pos, mask):
        mm = m(st)
        return mm(mm.embed(ids), pos, mask) @ mm.lm_head_kernel()

    @jax.jit
    def prefill(st, ids, pos, mask):
        mm = m(st)
        h, cache = mm.prefill(mm.embed(ids), pos, mask, max_len=16)
        return h @ mm.lm_head_kernel(), cache

    @jax.jit
    def decode(st, cache, token):
        mm = m(st)
        h, cache = mm.decode_step(mm.embed(token[:, None]), cache)
        return (h @ mm.lm_head_kernel())[:, 0], cache

    return dict(state=state, shared=shared, full=full, prefill=prefill, decode=decode)


def test_packed_equals_prefix_suffix_with_a_3_axis_prompt_table(fns):
    """2 prompts x 2 responses (every response row at its own positions, so a mixed-up row or
    axis order shows): [B2, S] text positions broadcast to the 3 axes, the same spelled
    [B2, 3, S] (bit-identical), and independent random [B2, 3, S]; packed == prefix + suffix."""
    rng = np.random.default_rng(3)
    lengths, p, s = np.array([12, 9]), 12, 4
    prompt = rng.integers(1, VOCAB, size=(2, p)).astype(np.int32)
    pmask = np.arange(p)[None] < lengths[:, None]
    pos = table(rng, lengths, p)
    start = np.array([pos[b, :, :n].max() + 1 for b, n in enumerate(lengths)])
    rpos = (np.repeat(start, 2)[:, None] + np.arange(s) + 5 * np.arange(4)[:, None]).astype(np.int32)
    tokens = rng.integers(1, VOCAB, size=(4, s)).astype(np.int32)
    suffix, packed = fns["shared"](fns["state"], prompt, pos, pmask, tokens, rpos)
    suffix3, packed3 = fns["shared"](fns["state"], prompt, pos, pmask, tokens, np.repeat(rpos[:, None], 3, axis=1))
    np.testing.assert_array_equal(np.asarray(suffix3), np.asarray(suffix))
    np.testing.assert_array_equal(np.asarray(packed3), np.asarray(packed))
    suffix_r, packed_r = fns["shared"](fns["state"], prompt, pos, pmask, tokens,
                                       rng.integers(0, 100, size=(4, 3, s)).astype(np.int32))
    assert float(jnp.abs(suffix_r - suffix).max()) > 1e-2  # other positions, other states
    err = max(float(jnp.abs(packed - suffix).max()), float(jnp.abs(packed_r - suffix_r).max()))
    print(f"packed vs prefix+suffix (3-axis prompt): max |hidden diff| = {err:.2e}")
    assert err < 1e-5


def test_prefill_then_decode_matches_the_full_forward(fns):
    """Prefill a 3-axis table (right padding), then greedy decode_step with default positions:
    the cache continues at max(valid positions, all axes) + 1 on every axis, and each step's
    logits equal a full forward over [prompt ‖ generated] at [table ‖ start + j]."""
    f, st = fns, fns["state"]
    rng = np.random.default_rng(4)
    lengths, p, steps, width = np.array([12, 7]), 12, 4, 16
    prompt = rng.integers(1, VOCAB, size=(2, p)).astype(np.int32)
    pmask = np.arange(p)[None] < lengths[:, None]
    pos = table(rng, lengths, p)
    start = np.array([pos[b, :, :n].max() + 1 for b, n in enumerate(lengths)])
    # Row 0: text 0..2, block t 3 3 3 3 5 5 5 5, text column 11 at 6 -> decoding from 7.
    # Row 1 (7 tokens) ends inside the block (t 3, h 3 3 4 4, w 3 4 3 4) -> from 5.
    assert start.tolist() == [7, 5]
    logits, cache = f["prefill"](st, prompt, pos, pmask)
    np.testing.assert_array_equal(cache.position, start)
    seq = np.zeros((2, width), np.int32)
    seq[:, :p] = np.where(pmask, prompt, 0)
    full_pos = np.zeros((2, 3, width), np.int32)
    full_pos[:, :, :p] = pos
    last = np.asarray(logits)[np.arange(2), lengths - 1]
    cur, worst = lengths.copy(), 0.0
    for j in range(steps):
        token = last.argmax(-1).astype(np.int32)
        seq[np.arange(2), cur] = token
        full_pos[np.arange(2), :, cur] = (start + j)[:, None]
        cur = cur + 1
        step_logits, cache = f["decode"](st, cache, token)
        ref = np.asarray(f["full"](st, seq, full_pos, np.arange(width)[None] < cur[:, None]))[np.arange(2), cur - 1]
        worst = max(worst, float(np.abs(np.asarray(step_logits) - ref).max()))
        last = np.asarray(step_logits)
    print(f"M-RoPE decode vs full forward: max |logits diff| over {steps} steps = {worst:.2e}")
    assert worst < 1e-4
    np.testing.assert_array_equal(cache.position, start + steps)
