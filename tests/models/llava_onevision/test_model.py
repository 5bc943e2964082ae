"""VideoLLM: video splicing, the shared video/prompt prefix on pairs, presets' sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models import VideoLLM, abstract_model, build_model, get_preset, num_video_tokens
from leanpo_jax.models.merge import merge_video_embeds

FRAMES = 4
RESPONSE = 5


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", seed=3)


def _frames(seed, batch=2):
    config = get_preset("tiny")
    size = config.vision.image_size
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (batch, FRAMES, size, size, 3)), jnp.float32)


def _prompts(config, text_lengths, rng):
    """Right-padded prompts [B, P]: text, the video placeholders, text; and their true lengths."""
    n = num_video_tokens(config, FRAMES)
    rows = []
    for before, after in text_lengths:
        rows.append(np.concatenate([
            rng.integers(10, 5000, before), np.full(n, config.video_token_index), rng.integers(10, 5000, after)
        ]))
    lengths = np.asarray([len(r) for r in rows])
    prompt = np.zeros((len(rows), lengths.max()), np.int64)
    for i, r in enumerate(rows):
        prompt[i, : len(r)] = r
    mask = np.arange(prompt.shape[1])[None] < lengths[:, None]
    return prompt, mask, lengths


def test_encode_video_gives_the_placeholder_count(tiny):
    embeds = tiny.encode_video(_frames(0))
    assert embeds.shape == (2, num_video_tokens(tiny.config, FRAMES), tiny.config.text.hidden_size)
    assert tiny.num_video_tokens(FRAMES) == FRAMES * 2 * 2 + 1  # 3x3 grid -> 2x2, one newline


def test_merge_puts_the_ith_embedding_at_the_ith_placeholder():
    ids = jnp.asarray([[5, 9, 9, 6, 9, 7], [9, 9, 9, 1, 2, 3]])
    text = jnp.zeros((2, 6, 1))
    video = jnp.asarray([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])
    merged = merge_video_embeds(text, ids, video, 9)[..., 0]
    np.testing.assert_array_equal(merged, [[0, 1, 2, 0, 3, 0], [4, 5, 6, 0, 0, 0]])


def test_placeholder_count_mismatch_names_both_counts(tiny):
    prompt, _, _ = _prompts(tiny.config, [(2, 3)], np.random.default_rng(0))
    video = tiny.encode_video(_frames(1, batch=1))
    with pytest.raises(ValueError, match=rf"holds {video.shape[1] - 1} video placeholder ids .* have {video.shape[1]} tokens"):
        tiny(jnp.asarray(prompt[:, 3:]), video)  # one placeholder cut off


def test_shared_prefix_pairs_equal_the_duplicated_layout(tiny):
    """prefix once per prompt + suffix for [chosen, rejected] == full forwards of [prompt ‖ y].

    Values and gradients w.r.t. every parameter (vision tower and projector included), for
    right-padded prompts of different true lengths.
    """
    config = tiny.config
    rng = np.random.default_rng(7)
    prompt, prompt_mask, lengths = _prompts(config, [(3, 4), (1, 1)], rng)
    responses = rng.integers(10, 5000, (2, 2, RESPONSE))  # [pair, chosen/rejected, R]
    frames = _frames(2)
    weights = jnp.asarray(rng.normal(size=(2, 2, RESPONSE + 1, config.text.hidden_size)), jnp.float32)

    # Duplicated layout: every sequence [prompt_i (true length) ‖ y], right-padded.
    total = prompt.shape[1] + RESPONSE
    full_ids = np.zeros((4, total), np.int64)
    for i in range(2):
        for j in range(2):
            seq = np.concatenate([prompt[i, : lengths[i]], responses[i, j]])
            full_ids[2 * i + j, : len(seq)] = seq
    full_mask = np.arange(total)[None] < (np.repeat(lengths, 2) + RESPONSE)[:, None]
    # Hidden states that predict the response: from the last prompt token to the last-but-one
    # response token... and the last one too (R + 1 rows), compared against the shared layout.
    rows = np.repeat(lengths, 2)[:, None] - 1 + np.arange(RESPONSE + 1)[None]

    def duplicated(model):
        video = jnp.repeat(model.encode_video(frames), 2, axis=0)
        hidden = model(jnp.asarray(full_ids), video, mask=jnp.asarray(full_mask))
        picked = jnp.take_along_axis(hidden, jnp.asarray(rows)[..., None], axis=1)
        return picked.reshape(2, 2, RESPONSE + 1, -1)

    def shared(model):
        video = model.encode_video(frames)
        hidden_p, kv = model.prefix(jnp.asarray(prompt), video, jnp.asarray(prompt_mask))
        last = jnp.take_along_axis(hidden_p, jnp.asarray(lengths - 1)[:, None, None], axis=1)
        tokens = jnp.asarray(responses.reshape(4, RESPONSE))
        positions = jnp.asarray(np.repeat(lengths, 2)[:, None] + np.arange(RESPONSE)[None])
        hidden_s = model.suffix(tokens, positions, kv, jnp.asarray(prompt_mask)).reshape(2, 2, RESPONSE, -1)
        last = jnp.broadcast_to(last[:, None], (2, 2, 1, last.shape[-1]))
        return jnp.concatenate([last, hidden_s], axis=2)

    def scalar(fn):
        return lambda model: jnp.sum(fn(model) * weights)

    want, want_grads = nnx.jit(nnx.value_and_grad(scalar(duplicated)))(tiny)
    got, got_grads = nnx.jit(nnx.value_and_grad(scalar(shared)))(tiny)
    np.testing.assert_allclose(nnx.jit(shared)(tiny), nnx.jit(duplicated)(tiny), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    flat_want = dict(nnx.to_flat_state(want_grads))
    flat_got = dict(nnx.to_flat_state(got_grads))
    assert flat_got.keys() == flat_want.keys()
    for path, w in flat_want.items():
        w, g = np.asarray(w[...]), np.asarray(flat_got[path][...])
        scale = max(np.abs(w).max(), 1e-6)
        # +1e-6: k biases get an exactly-zero gradient (softmax ignores a per-query constant),
        # computed as rounding noise of ~1e-7 both ways.
        assert np.abs(g - w).max() <= 1e-4 * scale + 1e-6, (path, np.abs(g - w).max(), scale)
    vision_grad = flat_got[("vision_tower", "patch_embed", "kernel")][...]
    assert np.abs(np.asarray(vision_grad)).max() > 0  # gradients reach the tower through the K/V


@pytest.mark.parametrize(
    "preset,params,tokens",
    [("llava-ov-qwen2-0.5b", 0.894e9, 6273), ("llava-video-qwen2-7b", 8.030e9, 13440)],
)
def test_presets_have_the_published_sizes(preset, params, tokens):
    model = abstract_model(get_preset(preset))
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
    assert abs(count - params) / params < 1e-3, count
    assert num_video_tokens(model.config, model.config.num_frames) == tokens


def test_text_only_model_refuses_video():
    config = get_preset("tiny").replace(vision=None)
    model = VideoLLM(config, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no vision tower"):
        model.encode_video(jnp.zeros((1, 1, 24, 24, 3)))
