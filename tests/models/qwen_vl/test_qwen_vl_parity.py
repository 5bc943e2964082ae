"""Qwen2-VL / Qwen2.5-VL against transformers (tiny random models saved by transformers, fp32,
CPU): logits on [text, video, text] prompts with our 4.x position table given to transformers,
text-only prompts without positions, both namings, save_hf -> from_pretrained exact."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models import get_preset, load_hf, resolve_model, save_hf
from leanpo_jax.models.qwen_vl.config import num_video_tokens, video_grid
from leanpo_jax.models.qwen_vl.hf_config import config_from_hf, transformers_dict
from leanpo_jax.models.qwen_vl.positions import rope_positions
from leanpo_jax.models.qwen_vl.vision_layout import patchify

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import save_file as save_torch  # noqa: E402

CLASSES = {"qwen2-vl-tiny": "Qwen2VLForConditionalGeneration",
           "qwen2.5-vl-tiny": "Qwen2_5_VLForConditionalGeneration"}
TOL = 1e-4


def randomize(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_scale = name.endswith("weight") and ("norm" in name or "ln_q" in name)
            p.copy_(1.0 + 0.2 * noise if is_scale else 0.1 * noise)
    return model.eval()


@pytest.fixture(scope="module", params=sorted(CLASSES))
def pair(request, tmp_path_factory):
    """(preset name, transformers model, its save_pretrained folder, our model loaded from it)."""
    name = request.param
    config = get_preset(name)
    cls = getattr(transformers, CLASSES[name])
    d = transformers_dict(config)
    hf = randomize(cls(cls.config_class.from_dict(d)), seed=len(name))
    folder = str(tmp_path_factory.mktemp(name.replace(".", "_")))
    hf.save_pretrained(folder)
    ours = load_hf(folder, config=config)
    return name, hf, folder, ours


def video_prompt(config, frames, seed=0, size=None):
    rng = np.random.default_rng(seed)
    size = tuple(config.video_size) if size is None else size
    n = num_video_tokens(config, frames, size)
    text = lambda k: list(rng.integers(10, 150000, size=k))  # noqa: E731
    ids = text(5) + [config.vision_start_token_id] + [config.video_token_id] * n + [config.vision_end_token_id] + text(6)
    pixels = rng.normal(size=(1, frames) + size + (3,)).astype(np.float32)
    return np.asarray(ids)[None], pixels


def hf_logits(hf, config, ids, pixels, positions):
    rows = np.asarray(patchify(jnp.asarray(pixels), config.vision))[0]
    t, h, w = video_grid(config, pixels.shape[1], pixels.shape[2:4])
    kwargs = dict(pixel_values_videos=torch.as_tensor(rows.copy()), video_grid_thw=torch.as_tensor([[t, h, w]]))
    with torch.no_grad():
        out = hf(input_ids=torch.as_tensor(ids), position_ids=torch.as_tensor(positions).permute(1, 0, 2), **kwargs)
    return out.logits.numpy()


@pytest.mark.parametrize("frames,size", [(4, None), (3, None), (4, (56, 112))])
def test_video_prompt_logits_match_with_our_positions(pair, frames, size):
    """size: the config's bucket, or another one (data.video_buckets) on the same model."""
    name, hf, _, ours = pair
    config = ours.config
    ids, pixels = video_prompt(config, frames, seed=frames, size=size)
    positions = rope_positions(ids[0], config, size=size)[None]  # [1, 3, T]
    video = ours.encode_video(jnp.asarray(pixels))
    hidden = ours(jnp.asarray(ids), video, positions=jnp.asarray(positions))
    got = np.asarray(hidden @ ours.lm_head_kernel())
    np.testing.assert_allclose(got, hf_logits(hf, config, ids, pixels, positions), atol=TOL, rtol=0)
    # Text after the video resumes at max + 1 (4.x): the table is not 0..T-1.
    assert positions[0, 0, -1] < ids.shape[1] - 1


def test_text_only_prompts_need_no_positions(pair):
    _, hf, _, ours = pair
    ids = np.random.default_rng(3).integers(10, 150000, size=(2, 9))
    with torch.no_grad():
        ref = hf(input_ids=torch.as_tensor(ids)).logits.numpy()
    got = np.asarray(ours(jnp.asarray(ids)) @ ours.lm_head_kernel())
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)


def _same_params(a, b, *, extras=True):
    kind = (nnx.Param, nnx.Variable) if extras else nnx.Param
    la = jax.tree_util.tree_leaves_with_path(nnx.state(a, kind))
    lb = jax.tree_util.tree_leaves_with_path(nnx.state(b, kind))
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


def test_save_hf_round_trips_and_transformers_loads_it(pair, tmp_path):
    name, hf, folder, ours = pair
    out = save_hf(ours, str(tmp_path / "export"))
    again = load_hf(out)
    assert again.config == ours.config
    _same_params(ours, again)
    reloaded = getattr(transformers, CLASSES[name]).from_pretrained(out).eval()
    want, got = hf.state_dict(), reloaded.state_dict()
    assert sorted(want) == sorted(got)
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert resolve_model(init_from=out).family.name == "qwen_vl"


def test_in_memory_names_load_the_same_weights(pair, tmp_path):
    _, hf, _, ours = pair
    state = {k: v.clone().contiguous() for k, v in hf.state_dict().items()}  # tied head: own copy
    assert any(k.startswith("model.language_model.") for k in state)
    file = str(tmp_path / "w.safetensors")
    save_torch(state, file)
    # (a tied model's in-memory lm_head.weight is kept as an extra; the parameters are equal)
    _same_params(ours, load_hf(file, config=ours.config), extras=False)


def test_config_read_from_the_transformers_folder(pair):
    name, _, folder, ours = pair
    with open(os.path.join(folder, "config.json")) as f:
        parsed = config_from_hf(json.load(f))
    want = get_preset(name)
    assert parsed.vision == want.vision and parsed.text == want.text
