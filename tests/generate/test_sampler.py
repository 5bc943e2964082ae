"""The KV-cache sampler: greedy == step-by-step argmax of full forwards, sampling frequencies,
k samples from one prefill == k separate prefills, stop tokens, vocabulary limit, determinism,
per-prompt seeds that make a row independent of its batch."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.generate.sampler import Sampler, SamplingConfig, sample_logits
from leanpo_jax.models import build_model, get_preset, num_video_tokens

VOCAB, LIMIT, STEPS = 300, 290, 6


@pytest.fixture(scope="module")
def setup():
    config = get_preset("tiny")
    model = build_model(config.replace(text=dataclasses.replace(config.text, vocab_size=VOCAB)), seed=1)
    rng = np.random.default_rng(0)
    n = num_video_tokens(model.config, 2)
    # Two prompts of different lengths in one right-padded batch (plus 2 spare pad columns).
    rows = [np.concatenate([[5, 6], np.full(n, model.config.video_token_index), rng.integers(10, LIMIT, k)])
            for k in (1, 4)]
    width = max(len(r) for r in rows) + 2
    ids, mask = np.zeros((2, width), np.int32), np.zeros((2, width), np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    frames = jnp.asarray(rng.normal(size=(2, 2, 24, 24, 3)).astype(np.float32))
    greedy = Sampler(model, SamplingConfig(max_new_tokens=STEPS, stop_ids=(), vocab_limit=LIMIT))
    return model, ids, mask, frames, greedy, greedy.generate(ids, mask, frames=frames)


def test_greedy_equals_argmax_of_full_forwards_step_by_step(setup):
    model, ids, mask, frames, _, out = setup
    video = model.encode_video(frames)
    kernel = np.asarray(model.lm_head_kernel(), np.float64)
    # One compile: each full sequence is right-padded to a fixed width, and the forward is
    # causal, so the hidden state at its last real token ignores the padding after it.
    width = ids.shape[1] + STEPS
    forward = nnx.jit(lambda m, x, v: m(x, v))
    for b in range(2):
        seq = list(ids[b, : mask[b].sum()])
        for t in range(STEPS):
            buf = np.zeros((1, width), np.int32)
            buf[0, : len(seq)] = seq
            hidden = np.asarray(forward(model, jnp.asarray(buf), video[b: b + 1])[0, len(seq) - 1], np.float64)
            full = hidden @ kernel
            limited = full.copy()
            limited[LIMIT:] = -np.inf
            want = int(np.argmax(limited))
            assert out.tokens[b, 0, t] == want, (b, t)
            # logps are under the raw model distribution (all V ids), not the truncated one.
            ref = full[want] - full.max() - np.log(np.exp(full - full.max()).sum())
            np.testing.assert_allclose(out.logps[b, 0, t], ref, atol=1e-5)
            seq.append(want)
    assert (out.lengths == STEPS).all() and not out.stopped.any()
    assert out.tokens.shape == out.logps.shape == (2, 1, STEPS) and out.tokens.dtype == np.int32


def test_k_samples_from_one_prefill(setup):
    model, ids, mask, frames, _, single = setup
    k4 = Sampler(model, SamplingConfig(max_new_tokens=STEPS, stop_ids=(), vocab_limit=LIMIT, num_samples=4))
    out = k4.generate(ids, mask, frames=frames)
    for i in range(4):
        np.testing.assert_array_equal(out.tokens[:, i], single.tokens[:, 0])
    hot = Sampler(model, SamplingConfig(max_new_tokens=STEPS, temperature=1.0, stop_ids=(), num_samples=4))
    a = hot.generate(ids, mask, frames=frames, seed=3)
    b = hot.generate(ids, mask, frames=frames, seed=3)
    c = hot.generate(ids, mask, frames=frames, seed=4)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    assert len({tuple(a.tokens[0, i]) for i in range(4)}) > 1
    assert hot._prefill._cache_size() == 1 and hot._decode._cache_size() == 1  # no recompiles
    # k samples from one prefill == the prompts repeated k times (rows b*k + i), one sample each.
    sep = Sampler(model, SamplingConfig(max_new_tokens=STEPS, temperature=1.0, stop_ids=()))
    rep = sep.generate(np.repeat(ids, 4, axis=0), np.repeat(mask, 4, axis=0),
                       frames=np.repeat(np.asarray(frames), 4, axis=0), seed=3)
    np.testing.assert_array_equal(rep.tokens.reshape(2, 4, STEPS), a.tokens)
    np.testing.assert_allclose(rep.logps.reshape(2, 4, STEPS), a.logps, atol=1e-5)


def test_stop_tokens_end_rows_and_pad_after(setup):
    model, ids, mask, frames, _, _ = setup
    # Greedy decoding of the random tiny model repeats one token. A seeded temperature-1 run
    # varies, and the same seed replays it exactly up to the stop (keys depend on seed, step, row).
    cfg = SamplingConfig(max_new_tokens=STEPS, temperature=1.0, stop_ids=(), vocab_limit=LIMIT)
    free = Sampler(model, cfg).generate(ids, mask, frames=frames, seed=11)
    r0, r1 = free.tokens[0, 0], free.tokens[1, 0]
    # A token that row 1 first emits at a step t >= 1 and that row 0 never emits.
    t = next(t for t in range(1, STEPS) if r1[t] not in r0 and r1[t] not in r1[:t])
    stop = int(r1[t])
    out = Sampler(model, dataclasses.replace(cfg, stop_ids=(stop,), pad_id=7)).generate(ids, mask, frames=frames,
                                                                                       seed=11)
    assert out.stopped[1, 0] and out.lengths[1, 0] == t
    np.testing.assert_array_equal(out.tokens[1, 0, : t + 1], r1[: t + 1])  # the stop token is kept
    np.testing.assert_allclose(out.logps[1, 0, : t + 1], free.logps[1, 0, : t + 1], atol=1e-6)
    assert (out.tokens[1, 0, t + 1:] == 7).all() and (out.logps[1, 0, t + 1:] == 0).all()
    # Row 0 never meets the stop id: it runs to max_new_tokens, unchanged.
    assert not out.stopped[0, 0] and out.lengths[0, 0] == STEPS
    np.testing.assert_array_equal(out.tokens[0, 0], r0)


def test_sampling_frequencies_on_a_toy_distribution():
    p = np.asarray([0.4, 0.25, 0.15, 0.12, 0.08])
    logits = jnp.log(jnp.asarray(p[None], jnp.float32))
    n = 20000
    keys = jax.random.split(jax.random.key(0), n)

    def freqs(cfg):
        ids = jax.vmap(lambda key: sample_logits(logits, key, cfg)[0])(keys)
        return np.bincount(np.asarray(ids), minlength=5) / n

    tol = 4 * np.sqrt(0.25 / n)  # 4 sigma of a binomial frequency at worst (p = 1/2)
    np.testing.assert_allclose(freqs(SamplingConfig(temperature=1.0)), p, atol=tol)
    cold = p ** 2 / (p ** 2).sum()  # softmax(log p / 0.5)
    np.testing.assert_allclose(freqs(SamplingConfig(temperature=0.5)), cold, atol=tol)
    # top-p 0.7: the smallest most-likely set of mass >= 0.7 is {0.4, 0.25, 0.15} (0.8), renormalised.
    nucleus = freqs(SamplingConfig(temperature=1.0, top_p=0.7))
    assert nucleus[3:].sum() == 0
    np.testing.assert_allclose(nucleus, np.asarray([0.4, 0.25, 0.15, 0, 0]) / 0.8, atol=tol)
    # top-p exactly at a boundary (0.65 = 0.4 + 0.25 up to f32 rounding) keeps 2 or 3, never more.
    assert freqs(SamplingConfig(temperature=1.0, top_p=0.6))[2:].sum() == 0
    top2 = freqs(SamplingConfig(temperature=1.0, top_k=2))
    assert top2[2:].sum() == 0
    np.testing.assert_allclose(top2, np.asarray([0.4, 0.25, 0, 0, 0]) / 0.65, atol=tol)
    limited = freqs(SamplingConfig(temperature=1.0, vocab_limit=3))
    assert limited[3:].sum() == 0
    np.testing.assert_allclose(limited, np.asarray([0.4, 0.25, 0.15, 0, 0]) / 0.8, atol=tol)
    assert int(sample_logits(logits, keys[0], SamplingConfig(temperature=0.0))[0]) == 0
    assert int(sample_logits(logits, keys[0], SamplingConfig(temperature=0.0, vocab_limit=3, banned_ids=(0,)))[0]) == 1


def test_banned_ids_and_min_new_tokens(setup):
    model, ids, mask, frames, _, single = setup
    first = int(single.tokens[0, 0, 0])
    banned = Sampler(model, SamplingConfig(max_new_tokens=STEPS, stop_ids=(), vocab_limit=LIMIT, banned_ids=(first,)))
    assert first not in banned.generate(ids, mask, frames=frames).tokens[0, 0]
    # The greedy first token as a stop id: without min_new_tokens row 0 stops at once.
    eager = Sampler(model, SamplingConfig(max_new_tokens=STEPS, stop_ids=(first,), vocab_limit=LIMIT))
    assert eager.generate(ids, mask, frames=frames).lengths[0, 0] == 0
    patient = Sampler(model, SamplingConfig(max_new_tokens=STEPS, stop_ids=(first,), vocab_limit=LIMIT,
                                            min_new_tokens=1))
    out = patient.generate(ids, mask, frames=frames)
    assert out.lengths[0, 0] >= 1 and out.tokens[0, 0, 0] != first


def test_input_errors(setup):
    model, ids, mask, frames, greedy, _ = setup
    with pytest.raises(ValueError, match="right-padded"):
        greedy.generate(ids, mask[:, ::-1], frames=frames)
    with pytest.raises(ValueError, match="not both"):
        greedy.generate(ids, mask, frames=frames, video_embeds=model.encode_video(frames))
    with pytest.raises(ValueError, match="placeholder"):
        greedy.generate(np.where(ids == model.config.video_token_index, 9, ids), mask, frames=frames)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)


def test_per_prompt_seeds_make_each_row_independent_of_its_batch(setup):
    model, ids, mask, frames, _, _ = setup
    hot = Sampler(model, SamplingConfig(max_new_tokens=STEPS, temperature=1.0, stop_ids=(), num_samples=2))
    # Seeds beyond 32 bits: the high word must count too (2**40 + 5 vs 5).
    seeds = np.asarray([2**40 + 5, 5], np.uint64)
    pair = hot.generate(ids, mask, frames=frames, seed=seeds)
    # The same prompt alone (batch 1, same width) or after another prompt draws the same tokens.
    for b in range(2):
        alone = hot.generate(ids[b: b + 1], mask[b: b + 1], frames=frames[b: b + 1], seed=seeds[b: b + 1])
        np.testing.assert_array_equal(alone.tokens[0], pair.tokens[b])
        np.testing.assert_allclose(alone.logps[0], pair.logps[b], atol=1e-5)
    swapped = hot.generate(ids[::-1], mask[::-1], frames=frames[::-1], seed=seeds[::-1])
    np.testing.assert_array_equal(swapped.tokens[::-1], pair.tokens)
    # Its k samples differ from each other, and another seed draws other tokens.
    assert not np.array_equal(pair.tokens[0, 0], pair.tokens[0, 1])
    other = hot.generate(ids, mask, frames=frames, seed=np.asarray([5, 2**40 + 5], np.uint64))
    assert not np.array_equal(other.tokens[0], pair.tokens[0])
    with pytest.raises(ValueError, match="one seed per prompt"):
        hot.generate(ids, mask, frames=frames, seed=[1, 2, 3])
