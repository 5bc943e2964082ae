"""Model-FLOP counts of the step: the shared prefix saves exactly the duplicated work."""

import dataclasses

from leanpo_jax.models import get_preset
from leanpo_jax.train import flops


def test_shared_saves_the_duplicated_prompt_and_video():
    config = get_preset("llava-ov-qwen2-0.5b")
    kw = dict(pairs=1, prompt_len=6337, response_len=256, num_frames=32)
    shared = flops.step_flops(config, layout="shared", **kw)
    naive = flops.step_flops(config, layout="naive", **kw)
    text_only = config.replace(vision=None)
    # The video costs one tower pass in shared and two in naive (frozen: forward only).
    v_shared = shared - flops.step_flops(text_only, layout="shared", **kw)
    v_naive = naive - flops.step_flops(text_only, layout="naive", **kw)
    assert abs(v_naive - 2 * v_shared) < 1e-6 * v_naive
    # docs/model_facts.md §13 (frozen tower): 0.5B at 32 frames ~0.092 PFLOP naive vs ~0.046 shared, with
    # non-causal attention; exact causal attention takes ~0.011 PFLOP off the naive pair.
    assert 0.075e15 < naive < 0.095e15 and 0.038e15 < shared < 0.048e15, (naive, shared)
    trained = flops.step_flops(config, layout="shared", train_vision=True, **kw)
    assert abs((trained - shared) - 2 * v_shared) < 1e-6 * trained


def test_dense_part_matches_six_n_per_token():
    config = get_preset("tiny").replace(vision=None)
    config = config.replace(text=dataclasses.replace(config.text, vocab_size=1))
    per_token = 6 * flops._layer_matmul_params(config)
    got = flops.step_flops(config, pairs=1, prompt_len=1, response_len=1, layout="naive")
    attention = 3 * flops._attention(config, 2 * (1 + 2))  # causal: 1 + 2 keys per sequence
    head = 3 * 2 * config.text.hidden_size * 1 * 2
    assert abs(got - (per_token * 4 + attention + head)) < 1e-6 * got
    assert flops.device_peak_tflops("NVIDIA H100 80GB HBM3") == 800.0
    assert flops.device_peak_tflops("cpu") is None
