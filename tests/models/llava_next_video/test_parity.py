"""LLaVA-NeXT-Video against transformers' LlavaNextVideoForConditionalGeneration (tiny random
models, fp32, CPU): video features, logits with linear RoPE on and off, the fork's
project-then-pool order against a hand-written torch reference, every naming, exact round trips."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models import get_preset, load_hf, num_video_tokens, save_hf
from leanpo_jax.models.llava_next_video.hf_config import hf_config_dict

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import save_file as save_torch  # noqa: E402

FRAMES, BATCH, TOL = 2, 2, 1e-4
CFG = get_preset("llava-next-video-tiny")  # CLIP 32 px / patch 8 -> 4x4 grid -> 2x2 pooled, MHA


def randomize(model, seed):
    """Every parameter random and non-trivial (norm scales around 1, biases non-zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_scale = name.endswith("weight") and ("norm" in name or "layrnorm" in name)
            p.copy_(1.0 + 0.2 * noise if is_scale else 0.1 * noise)
    return model.eval()


def hf_model(tmp_path_factory, name, config, seed):
    """A random tiny transformers model of `config` (+ one unused 3rd CLIP layer), saved."""
    d = hf_config_dict(config, extra_vision_layers=1)
    d.pop("leanpo_jax")
    d.pop("dtype")
    model = randomize(transformers.LlavaNextVideoForConditionalGeneration(
        transformers.LlavaNextVideoConfig.from_dict(d)), seed)
    folder = str(tmp_path_factory.mktemp(name))
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    return hf_model(tmp_path_factory, "nv_scaled", CFG, 1)


@pytest.fixture(scope="module")
def unscaled(tmp_path_factory):
    cfg = CFG.replace(text=dataclasses.replace(CFG.text, rope_linear_factor=1.0))
    return hf_model(tmp_path_factory, "nv_unscaled", cfg, 2)


def video_inputs(seed=0, text_len=7):
    rng = np.random.default_rng(seed)
    v = CFG.vision
    pixels = rng.normal(size=(BATCH, FRAMES, v.image_size, v.image_size, 3)).astype(np.float32)
    n = num_video_tokens(CFG, FRAMES)
    ids = rng.integers(3, 32000, size=(BATCH, text_len + n + 5))
    ids[:, 0] = 1
    ids[:, text_len:text_len + n] = CFG.video_token_index
    return pixels, ids


def torch_video(pixels):
    return torch.as_tensor(pixels).permute(0, 1, 4, 2, 3).contiguous()


def hf_logits(model, ids, pixels):
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(ids), pixel_values_videos=torch_video(pixels))
    return out.logits.numpy()


def our_logits(model, ids, pixels):
    hidden = model(jnp.asarray(ids), model.encode_video(jnp.asarray(pixels)))
    return np.asarray(hidden @ model.lm_head_kernel())


def test_config_read_from_the_saved_folder(scaled):
    model = load_hf(scaled[1])
    c = model.config
    assert type(model).__name__ == "NextVideoLLM"
    assert c.vision.num_layers == 2 and c.text.rope_linear_factor == 2.0
    assert c.pool_before_projector and c.pool_mode == "average" and c.newline == "no_token"
    assert c.text.num_kv_heads == c.text.num_heads and not c.text.tie_word_embeddings
    assert len(model.hf_extra.get_value()) == 16  # the unused third CLIP layer, kept


def test_video_features_match_get_video_features(scaled):
    hf, folder = scaled
    ours = load_hf(folder)
    pixels, _ = video_inputs()
    with torch.no_grad():
        ref = hf.model.get_video_features(pixel_values_videos=torch_video(pixels))
    ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
    ref = torch.cat(list(ref)) if isinstance(ref, (tuple, list)) else ref
    got = np.asarray(ours.encode_video(jnp.asarray(pixels))).reshape(-1, CFG.text.hidden_size)
    np.testing.assert_allclose(got, ref.reshape(-1, CFG.text.hidden_size).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["scaled", "unscaled"])
def test_logits_match_transformers(which, request):
    hf, folder = request.getfixturevalue(which)
    ours = load_hf(folder)
    pixels, ids = video_inputs(1)
    ref = hf_logits(hf, ids, pixels)
    np.testing.assert_allclose(our_logits(ours, ids, pixels), ref, atol=TOL, rtol=0)
    # The scaling matters on these positions: the other factor is far off.
    factor = ours.config.text.rope_linear_factor
    other = ours.config.replace(text=dataclasses.replace(ours.config.text, rope_linear_factor=3.0 - factor))
    wrong = load_hf(folder, config=other)
    assert np.max(np.abs(our_logits(wrong, ids, pixels) - ref)) > 1e-3


def test_project_then_pool_matches_a_torch_reference(scaled):
    """The LeanPO fork's order: MLP on all 16 patches of a frame, then AvgPool2d(2)."""
    hf, folder = scaled
    fork = load_hf(folder, config=load_hf(folder).config.replace(pool_before_projector=False))
    pixels, _ = video_inputs(2)
    g = CFG.vision.grid_size
    with torch.no_grad():
        flat = torch_video(pixels).reshape(-1, 3, CFG.vision.image_size, CFG.vision.image_size)
        feats = hf.model.vision_tower(flat, output_hidden_states=True).hidden_states[-2][:, 1:]
        projected = hf.model.multi_modal_projector(feats)  # [N, 16, D]
        grid = projected.reshape(-1, g, g, projected.shape[-1]).permute(0, 3, 1, 2)
        ref = torch.nn.functional.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
    got = np.asarray(fork.encode_video(jnp.asarray(pixels))).reshape(ref.shape)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5, rtol=0)
    transformers_order = np.asarray(load_hf(folder).encode_video(jnp.asarray(pixels))).reshape(ref.shape)
    assert np.max(np.abs(transformers_order - got)) > 1e-4  # avg(MLP(x)) != MLP(avg(x))


def assert_same_params(a, b):
    la = jax.tree_util.tree_leaves_with_path(nnx.state(a))
    lb = jax.tree_util.tree_leaves_with_path(nnx.state(b))
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


def test_save_hf_round_trips_and_transformers_loads_it(scaled, tmp_path):
    hf, folder = scaled
    ours = load_hf(folder)
    out = save_hf(ours, str(tmp_path / "export"))
    again = load_hf(out)
    assert again.config == ours.config
    assert_same_params(ours, again)
    reloaded = transformers.LlavaNextVideoForConditionalGeneration.from_pretrained(out).eval()
    want, got = hf.state_dict(), reloaded.state_dict()
    assert sorted(want) == sorted(got)
    for key in want:
        assert torch.equal(want[key], got[key]), key
    with open(os.path.join(out, "video_preprocessor_config.json")) as f:
        pre = json.load(f)
    assert pre["size"] == {"shortest_edge": 32} and pre["crop_size"] == {"height": 32, "width": 32}


def _rename(state, rules):
    out = {}
    for k, v in state.items():
        for old, new in rules:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v.contiguous()
    return out


@pytest.mark.parametrize("naming", ["transformers", "lmms-lab"])
def test_other_namings_load_the_same_weights(naming, scaled, tmp_path):
    hf, folder = scaled
    ours = load_hf(folder)
    state = hf.state_dict()  # transformers 5 in-memory names
    if naming == "lmms-lab":
        state = _rename(state, [
            ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
            ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
            ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
            ("model.language_model.", "model.")])
    assert any(k.startswith("model.vision_tower.encoder.") or "vision_tower.vision_tower" in k for k in state)
    file = str(tmp_path / "w.safetensors")
    save_torch(state, file)
    other = load_hf(file, config=ours.config)
    assert_same_params(ours, other)
