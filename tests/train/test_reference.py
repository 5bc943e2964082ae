"""DPO reference cache: computed once, reused, keyed by data and weights; lookups by record."""

import os

import numpy as np
import pytest

from leanpo_jax.train import reference


def test_cache_is_reused_and_keyed_by_data_and_weights(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"id": "a"}\n{"id": "b"}\n')
    calls = []

    def score(batches):
        calls.append(list(batches))
        return {"chosen": np.asarray([-1.0, -2.0]), "rejected": np.asarray([-3.0, np.nan]), "x": np.zeros(2)}

    weights = reference.weights_identity("", 0, "tiny")
    key = reference.cache_key(str(pairs), {"num_frames": 4}, weights)
    cache = str(tmp_path / "reference")
    first = reference.reference_logps(score, lambda: [1, 2], key=key, cache_dir=cache)
    again = reference.reference_logps(score, lambda: [1, 2], key=key, cache_dir=cache)
    assert len(calls) == 1 and os.listdir(cache) == [f"{key}.npz"]
    np.testing.assert_array_equal(first["chosen"], again["chosen"])
    assert key != reference.cache_key(str(pairs), {"num_frames": 8}, weights)
    assert key != reference.cache_key(str(pairs), {"num_frames": 4}, reference.weights_identity("", 1, "tiny"))
    pairs.write_text('{"id": "a"}\n{"id": "c"}\n')
    assert key != reference.cache_key(str(pairs), {"num_frames": 4}, weights)

    looked = reference.lookup(first, np.asarray([0, -1, 0]))
    np.testing.assert_array_equal(looked["ref_chosen_logps"], np.asarray([-1.0, 0.0, -1.0], np.float32))
    np.testing.assert_array_equal(looked["ref_rejected_logps"], np.asarray([-3.0, 0.0, -3.0], np.float32))
    with pytest.raises(ValueError, match="record line"):
        reference.lookup(first, np.asarray([1]))  # rejected[1] is NaN: the pass skipped it
