"""The KV-cache sampler: greedy == step-by-step argmax of full forwards, sampling frequencies,
k samples from one prefill, stop tokens, vocabulary limit, determinism."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leanpo_jax.generate.sampler import Sampler, SamplingConfig, sample_logits
from leanpo_jax.models.config import get_preset, num_video_tokens
from leanpo_jax.models.video_llm import build_model

VOCAB, LIMIT, STEPS = 300, 290, 6


@pytest.fixture(scope="module")
def setup():
    config = get_preset("tiny")
    model = build_model(config.replace(text=dataclasses.replace(config.text, vocab_size=VOCAB)), seed=1)
    rng = np.random.default_rng(0)
    n = num_video_tokens(model.config, 2)
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
    for b in range(2):
        seq = list(ids[b, : mask[b].sum()])
        for t in range(STEPS):
            hidden = np.asarray(model(jnp.asarray([seq]), video[b: b + 1])[0, -1], np.float64)
            logits = hidden @ kernel
            logits[LIMIT:] = -np.inf
            want = int(np.argmax(logits))
            assert out.tokens[b, 0, t] == want, (b, t)
            logp = logits[want] - np.log(np.exp(logits[:LIMIT] - logits[:LIMIT].max()).sum()) - logits[:LIMIT].max()
            full = hidden @ kernel  # logps are under the untruncated model distribution
            ref = full[want] - full.max() - np.log(np.exp(full - full.max()).sum())
            np.testing.assert_allclose(out.logps[b, 0, t], ref, atol=1e-4)
            assert logp >= ref - 1e-9
            seq.append(want)
    assert (out.lengths == STEPS).all() and not out.stopped.any()


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


def test_stop_tokens_end_rows_and_pad_after(setup):
    model, ids, mask, frames, _, single = setup
    # Row 1's greedy token at step 2 becomes a stop id (it may also stop row 0 earlier).
    stop = int(single.tokens[1, 0, 2])
    sampler = Sampler(model, SamplingConfig(max_new_tokens=STEPS, stop_ids=(stop,), vocab_limit=LIMIT, pad_id=0))
    out = sampler.generate(ids, mask, frames=frames)
    for b in range(2):
        row = single.tokens[b, 0]
        hits = np.flatnonzero(row == stop)
        if hits.size:
            n = int(hits[0])
            assert out.stopped[b, 0] and out.lengths[b, 0] == n
            np.testing.assert_array_equal(out.tokens[b, 0, : n + 1], row[: n + 1])
            assert (out.tokens[b, 0, n + 1:] == 0).all() and (out.logps[b, 0, n + 1:] == 0).all()
        else:
            assert not out.stopped[b, 0] and out.lengths[b, 0] == STEPS
    assert out.stopped[1, 0] and out.lengths[1, 0] <= 2


def test_sampling_frequencies_on_a_toy_distribution():
    logits = jnp.log(jnp.asarray([[0.4, 0.25, 0.15, 0.12, 0.08]], jnp.float32))
    n = 20000
    keys = jax.random.split(jax.random.key(0), n)

    def freqs(cfg):
        ids = jax.vmap(lambda key: sample_logits(logits, key, cfg)[0])(keys)
        return np.bincount(np.asarray(ids), minlength=5) / n

    p = np.asarray([0.4, 0.25, 0.15, 0.12, 0.08])
    tol = 4 * np.sqrt(0.25 / n)
    np.testing.assert_allclose(freqs(SamplingConfig(temperature=1.0)), p, atol=tol)
    cold = p ** 2 / (p ** 2).sum()
    np.testing.assert_allclose(freqs(SamplingConfig(temperature=0.5)), cold, atol=tol)
    # top-p 0.7: smallest prefix with mass >= 0.7 is {0.4, 0.25, 0.15} (0.8); renormalised.
    nucleus = np.asarray([0.4, 0.25, 0.15, 0, 0]) / 0.8
    np.testing.assert_allclose(freqs(SamplingConfig(temperature=1.0, top_p=0.7)), nucleus, atol=tol)
    top2 = np.asarray([0.4, 0.25, 0, 0, 0]) / 0.65
    np.testing.assert_allclose(freqs(SamplingConfig(temperature=1.0, top_k=2)), top2, atol=tol)
    limited = freqs(SamplingConfig(temperature=1.0, vocab_limit=3))
    assert limited[3:].sum() == 0
    np.testing.assert_allclose(limited, np.asarray([0.4, 0.25, 0.15, 0, 0]) / 0.8, atol=tol)
    assert int(sample_logits(logits, keys[0], SamplingConfig(temperature=0.0))[0]) == 0


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
