"""scoring.avg_logps: the log-probs of a full causal forward, per response, without a gradient."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leanpo_jax.data.batch import batch_from_rows
from leanpo_jax.data.video import normalize_frames
from leanpo_jax.models import build_model, get_preset, num_video_tokens, scoring

VOCAB = 300


@pytest.fixture(scope="module")
def model():
    config = get_preset("tiny")
    return build_model(config.replace(text=dataclasses.replace(config.text, vocab_size=VOCAB)), seed=3)


def _batch(config, rng):
    n = num_video_tokens(config, 2)
    prompts = [np.concatenate([[5, 6], np.full(n, config.video_token_index), [7] * k]) for k in (1, 4)]
    chosen = rng.integers(10, VOCAB, (2, 5)).astype(np.int32)
    rejected = rng.integers(10, VOCAB, (2, 5)).astype(np.int32)
    s = config.vision.image_size
    batch = batch_from_rows("pairs", prompts, {"chosen": [chosen[0], chosen[1, :2]], "rejected": [rejected[0, :3], rejected[1]]},
                            prompt_len=max(len(p) for p in prompts) + 1, response_len=5,
                            frames=rng.integers(0, 256, (2, 2, s, s, 3)).astype(np.uint8))
    del batch["pair_weight"]
    return batch


def test_avg_logps_equals_a_full_forward_per_response(model):
    config = model.config
    batch = _batch(config, np.random.default_rng(0))
    got = jax.device_get(scoring.jitted_avg_logps()(model, batch))
    frames = normalize_frames(batch["frames"], config.vision.image_mean, config.vision.image_std)
    video = model.encode_video(frames)
    for name in ("chosen", "rejected"):
        for b in range(2):
            length = int(batch["prompt_lengths"][b])
            count = int(batch[f"{name}_mask"][b].sum())
            response = batch[f"{name}_ids"][b, :count]
            seq = np.concatenate([batch["prompt_ids"][b, :length], response])[None]
            hidden = model(jnp.asarray(seq), video[b: b + 1])
            logits = np.asarray(hidden[0] @ model.lm_head_kernel(), np.float64)
            logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
                - logits.max(-1, keepdims=True)
            want = sum(logp[length - 1 + j, response[j]] for j in range(count))
            np.testing.assert_allclose(got[name][b], want, rtol=2e-5)
            np.testing.assert_allclose(got[f"{name}_avg"][b], want / count, rtol=2e-5)
            assert got[f"{name}_tokens"][b] == count


def test_avg_logps_carries_no_gradient(model):
    from flax import nnx

    batch = _batch(model.config, np.random.default_rng(1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def f(p):
        return scoring.avg_logps(nnx.merge(graphdef, p, rest), batch)["chosen"].sum()

    grads = jax.grad(f)(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_score_pairs_fills_records_by_index_and_leaves_skipped_ones_nan(model):
    batch = _batch(model.config, np.random.default_rng(2))
    first = dict(batch, record_index=np.asarray([3, 0], np.int32))
    second = dict(batch, record_index=np.asarray([1, -1], np.int32))  # -1: a padding row
    table = scoring.score_pairs(model, [first, second], num_records=5)
    direct = jax.device_get(scoring.jitted_avg_logps()(model, batch))
    np.testing.assert_allclose(table["chosen"][[3, 0, 1]], [direct["chosen"][0], direct["chosen"][1], direct["chosen"][0]], rtol=1e-6)
    assert np.isnan(table["chosen"][[2, 4]]).all()


def _identical_rows_batch(config, seed, *, rows=8, response_len=16):
    """Even rows: rejected == chosen (same ids, same mask); odd rows differ. Prompt and
    response lengths vary by row, so the identical sides sit at different offsets of the
    packed [prompt ‖ y_c ‖ y_r] pass (where float noise between them used to come from)."""
    rng = np.random.default_rng(seed)
    n = num_video_tokens(config, 2)
    prompts = [np.concatenate([[5, 6], np.full(n, config.video_token_index), [7] * (1 + 2 * b)]) for b in range(rows)]
    chosen = [rng.integers(10, VOCAB, rng.integers(2, response_len)).astype(np.int32) for _ in range(rows)]
    rejected = [c if b % 2 == 0 else rng.integers(10, VOCAB, rng.integers(2, response_len)).astype(np.int32)
                for b, c in enumerate(chosen)]
    answer = [rng.integers(10, VOCAB, 3).astype(np.int32) for _ in range(rows)]
    s = config.vision.image_size
    batch = batch_from_rows("scored_pairs", prompts, {"chosen": chosen, "rejected": rejected, "answer": answer},
                            prompt_len=max(len(p) for p in prompts) + 1, response_len=response_len,
                            frames=rng.integers(0, 256, (rows, 2, s, s, 3)).astype(np.uint8))
    del batch["pair_weight"]
    return batch


@pytest.mark.parametrize("layout", ["shared", "naive"])
def test_identical_chosen_and_rejected_get_bit_identical_scores(model, layout):
    # Seeds 0 and 2 gave the even rows' sides scores 7.6e-6 apart before the scorer tied them.
    for seed in range(3):
        batch = _identical_rows_batch(model.config, seed)
        got = jax.device_get(scoring.jitted_avg_logps(layout)(model, batch))
        for key in ("", "_avg", "_tokens"):
            np.testing.assert_array_equal(got["chosen" + key][0::2], got["rejected" + key][0::2])
        # The rows whose sides differ keep their own scores, and the tied score is the text's.
        assert (got["chosen"][1::2] != got["rejected"][1::2]).all()
        lone = dict(batch, chosen_ids=batch["rejected_ids"], chosen_mask=batch["rejected_mask"],
                    rejected_ids=batch["answer_ids"], rejected_mask=batch["answer_mask"])
        lone = {k: v for k, v in lone.items() if not k.startswith("answer")}
        alone = jax.device_get(scoring.jitted_avg_logps(layout)(model, lone))
        np.testing.assert_allclose(got["rejected"], alone["chosen"], rtol=2e-5)


def test_score_pairs_gives_identical_records_one_score(model):
    batch = _identical_rows_batch(model.config, 0)
    table = scoring.score_pairs(model, [dict(batch, record_index=np.arange(8, dtype=np.int32))], num_records=8)
    for key in ("chosen", "chosen_avg"):
        np.testing.assert_array_equal(table[key][0::2], table[key.replace("chosen", "rejected")][0::2])
