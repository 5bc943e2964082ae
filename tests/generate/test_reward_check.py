"""The reward check of self-generation (SelfGenerator._score on the tiny config's random model):
a pair whose chosen text equals its rejected one gets one score for both sides, bit for bit,
whatever the other rows of the scoring batch hold."""

import importlib.util
import os

import numpy as np
import pytest

from conftest import REPO_ROOT

from leanpo_jax.generate.self_generate import SelfGenerator


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("tiny", os.path.join(REPO_ROOT, "configs", "tiny.py"))
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    return SelfGenerator(tiny.get_config())


def _item(generator, i, chosen, rejected, rng):
    height, width = generator.frame_policy.size
    frames = rng.integers(0, 256, (generator.score_frames, height, width, 3)).astype(np.uint8)
    return {"id": f"r{i}", "video": f"v{i}.mp4", "prompt": "What colour is the shape" + "?" * i,
            "answer": "The shape is red.", "source": "test", "chosen": chosen, "rejected": rejected,
            "score_frames": frames}


def test_identical_texts_score_equal_next_to_rows_of_other_lengths(generator):
    rng = np.random.default_rng(0)
    texts = [("Red.", "Red."), ("The shape is blue and it moves left.", "Green."),
             ("It is a large red circle moving right across the video.",
              "It is a large red circle moving right across the video."),
             ("Two shapes.", "Three small shapes that move up.")]
    scores = generator._score([_item(generator, i, c, r, rng) for i, (c, r) in enumerate(texts)])
    assert not any(isinstance(s, Exception) for s in scores), scores
    for i in (0, 2):
        assert scores[i]["chosen_avg_logp"] == scores[i]["rejected_avg_logp"]
    for i in (1, 3):
        assert scores[i]["chosen_avg_logp"] != scores[i]["rejected_avg_logp"]
    assert all(s["chosen_avg_logp"] < 0 for s in scores)
