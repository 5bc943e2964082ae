"""The Qwen2-VL / Qwen2.5-VL vision tower against transformers' get_video_features (tiny random
models, fp32, CPU): Qwen2-VL on 56 px frames, Qwen2.5-VL on a uniform window grid (112 px, 56 px
windows) and the ragged 84 px grid, odd frame counts; patchify against an independent per-patch
loop (the processor needs torchvision, absent here); the window layout against HF's window
index; the HF tensor table against the saved file's and the in-memory names; exact round trips."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models.qwen_vl.config import PRESETS, num_video_tokens, video_grid
from leanpo_jax.models.qwen_vl.vision import (QwenVisionTower, export_vision_state_dict,
                                              load_vision_state_dict, qwen_vision_hf_table)
from leanpo_jax.models.qwen_vl.vision_layout import patchify, slice_layout

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file  # noqa: E402

BATCH, TOL = 2, 1e-5
V2, V25 = PRESETS["qwen2-vl-tiny"], PRESETS["qwen2.5-vl-tiny"]  # 56 px / 84 px (ragged) frames


def hf_config(cfg):
    """A transformers Qwen2-VL / Qwen2.5-VL config with `cfg`'s vision tower and a 1-layer text
    decoder with a small vocabulary (never run here)."""
    v, t = cfg.vision, cfg.text
    text = dict(vocab_size=1024, bos_token_id=None, eos_token_id=None, hidden_size=t.hidden_size,
                intermediate_size=t.intermediate_size,
                num_hidden_layers=1, num_attention_heads=t.num_heads, num_key_value_heads=t.num_kv_heads,
                rope_parameters={"rope_type": "default", "rope_theta": t.rope_theta,
                                 "mrope_section": list(t.mrope_section)})
    common = dict(depth=v.depth, num_heads=v.num_heads, patch_size=v.patch_size, in_channels=v.in_channels,
                  temporal_patch_size=v.temporal_patch_size, spatial_merge_size=v.spatial_merge_size)
    if v.version == "2":
        assert v.mlp_ratio == int(v.mlp_ratio)  # HF's strict config types mlp_ratio as int
        vision = dict(common, embed_dim=v.hidden_size, hidden_size=v.out_hidden_size,
                      mlp_ratio=int(v.mlp_ratio))
        return transformers.Qwen2VLConfig(vision_config=vision, text_config=text)
    vision = dict(common, hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                  out_hidden_size=v.out_hidden_size, window_size=v.window_size,
                  fullatt_block_indexes=list(v.fullatt_block_indexes))
    return transformers.Qwen2_5_VLConfig(vision_config=vision, text_config=text)


def randomize_visual(model, seed):
    """Every vision parameter random and non-trivial (norm weights around 1, biases non-zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.model.visual.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if "norm" in name or "ln_q" in name else 0.1 * noise)
    return model.eval()


def build_hf(tmp_path_factory, cfg, seed):
    cls = (transformers.Qwen2VLForConditionalGeneration if cfg.vision.version == "2"
           else transformers.Qwen2_5_VLForConditionalGeneration)
    model = randomize_visual(cls(hf_config(cfg)), seed)
    folder = tmp_path_factory.mktemp(f"qwen{cfg.vision.version}_vl")
    model.save_pretrained(str(folder))
    hub = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if k.startswith("visual.")}
    return model, hub


@pytest.fixture(scope="module")
def hf2(tmp_path_factory):
    return build_hf(tmp_path_factory, V2, 1)


@pytest.fixture(scope="module")
def hf25(tmp_path_factory):
    return build_hf(tmp_path_factory, V25, 2)


def our_tower(cfg, hub):
    """A tower of `cfg` loaded from the hub-named (`visual.*`) tensors of the saved file (built
    abstractly: the load fills every parameter)."""
    tower = nnx.eval_shape(lambda: QwenVisionTower(cfg, rngs=nnx.Rngs(0)))
    load_vision_state_dict(tower, hub, prefix="visual.")
    return tower


def run(tower, frames):
    """The tower's output on numpy frames, jitted (one compile instead of eager op dispatch)."""
    graph, params = nnx.split(tower)
    return np.asarray(jax.jit(lambda p, x: nnx.merge(graph, p)(x))(params, jnp.asarray(frames)))


def frames_for(cfg, num_frames, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(BATCH, num_frames) + tuple(cfg.video_size) + (3,)).astype(np.float32)


def reference_rows(frames, v):
    """HF's processor layout, one patch at a time: channels-first frames, the last frame repeated
    to a multiple of temporal_patch_size, rows (t, merge row, merge col, i, j), each (C, tp, p, p)."""
    x = frames.transpose(0, 1, 4, 2, 3)
    while x.shape[1] % v.temporal_patch_size:
        x = np.concatenate([x, x[:, -1:]], axis=1)
    tp, p, m = v.temporal_patch_size, v.patch_size, v.spatial_merge_size
    gh, gw = x.shape[3] // p, x.shape[4] // p
    rows = [x[b, ti * tp:(ti + 1) * tp, :, r * p:(r + 1) * p, c * p:(c + 1) * p].transpose(1, 0, 2, 3).ravel()
            for b in range(x.shape[0]) for ti in range(x.shape[1] // tp)
            for bh in range(gh // m) for bw in range(gw // m) for i in range(m) for j in range(m)
            for r, c in [(bh * m + i, bw * m + j)]]
    return np.stack(rows).reshape(x.shape[0], -1, rows[0].size)


def hf_video_features(model, cfg, frames):
    v = cfg.vision
    rows = reference_rows(frames, v)
    grid = torch.tensor([video_grid(cfg, frames.shape[1])] * frames.shape[0])
    with torch.no_grad():
        out = model.get_video_features(pixel_values_videos=torch.as_tensor(rows.reshape(-1, v.patch_dim)),
                                       video_grid_thw=grid)
    return torch.stack(list(out.pooler_output)).numpy()


def test_patchify_matches_the_processor_layout():
    for cfg, frames in [(V2, 4), (V25, 3)]:  # 3: the last frame repeated
        x = frames_for(cfg, frames, seed=3)
        got = np.asarray(patchify(jnp.asarray(x), cfg.vision))
        np.testing.assert_array_equal(got, reference_rows(x, cfg.vision))


@pytest.mark.parametrize("size", [(84, 84), (112, 112), (84, 140)])
def test_windows_match_hf_window_index(size):
    from transformers.vision_utils import get_vision_window_index
    v = V25.vision
    layout = slice_layout(v, *size)
    gh, gw = size[0] // v.patch_size, size[1] // v.patch_size
    index, cu = get_vision_window_index(torch.tensor([[1, gh, gw]]), v.spatial_merge_size, v.window_size,
                                        v.patch_size)
    bounds = (cu.numpy() // v.merge_unit).tolist()
    hf = {frozenset(index[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])}
    ours = {frozenset((row[:n] // v.merge_unit).tolist()) for row, n in zip(layout.window_index,
                                                                            layout.window_count)}
    assert ours == hf
    assert layout.ragged == (size != (112, 112))
    # Every token sits in a valid (prefix) slot of its window, and the two gathers invert.
    wmax = layout.window_index.shape[1]
    assert (layout.window_inverse % wmax < layout.window_count[layout.window_inverse // wmax]).all()
    np.testing.assert_array_equal(layout.window_index.reshape(-1)[layout.window_inverse], np.arange(gh * gw))


@pytest.mark.parametrize("version,size,num_frames", [
    ("2", (56, 56), 4), ("2", (56, 56), 3),
    ("2.5", (112, 112), 4),  # 2 x 2 windows of 4 x 4 patches, none ragged
    ("2.5", (84, 84), 4), ("2.5", (84, 84), 3),  # windows of 4x4, 4x2, 2x4, 2x2 patches
])
def test_video_features_match_transformers(version, size, num_frames, request):
    base = V2 if version == "2" else V25
    model, hub = request.getfixturevalue("hf2" if version == "2" else "hf25")
    cfg = base.replace(video_size=size, num_frames=num_frames)
    frames = frames_for(cfg, num_frames, seed=num_frames)
    got = run(our_tower(cfg, hub), frames)
    ref = hf_video_features(model, cfg, frames)
    assert got.shape == ref.shape == (BATCH, num_video_tokens(cfg), cfg.vision.out_hidden_size)
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)


def test_window_attention_matters_on_the_ragged_grid(hf25):
    """Every block attending to the whole slice is far from transformers: the windows are tested."""
    model, hub = hf25
    every = tuple(range(V25.vision.depth))
    full = V25.replace(vision=dataclasses.replace(V25.vision, fullatt_block_indexes=every))
    frames = frames_for(V25, V25.num_frames, seed=V25.num_frames)
    got = run(our_tower(full, hub), frames)
    assert np.max(np.abs(got - hf_video_features(model, V25, frames))) > 1e-2


@pytest.mark.parametrize("version", ["2", "2.5"])
def test_table_names_and_round_trip(version, request):
    model, hub = request.getfixturevalue("hf2" if version == "2" else "hf25")
    cfg = V2 if version == "2" else V25
    table = qwen_vision_hf_table(cfg)
    assert len({e.hf_key for e in table}) == len(table)
    assert {e.hf_key for e in table} == set(hub)  # every hub tensor, nothing else
    in_memory = {k for k in model.state_dict() if k.startswith("model.visual.")}
    assert {e.hf_key for e in qwen_vision_hf_table(cfg, prefix="model.visual.")} == in_memory
    exported = export_vision_state_dict(our_tower(cfg, hub))
    for key, value in hub.items():
        assert exported[key].shape == value.shape and exported[key].dtype == value.dtype, key
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    again = nnx.eval_shape(lambda: QwenVisionTower(cfg, rngs=nnx.Rngs(1)))
    load_vision_state_dict(again, exported)
    for key, value in export_vision_state_dict(again).items():
        np.testing.assert_array_equal(value, hub[key], err_msg=key)


def test_remat_gradients_match_torch_on_ragged_windows(hf25):
    """remat + the scanned window/full branch + window key lengths differentiate like torch:
    d mean(features²) / d every parameter, mapped to HF layout through the table."""
    model, hub = hf25
    cfg = V25.replace(remat=True)
    frames = frames_for(cfg, cfg.num_frames, seed=5)
    graph, params = nnx.split(our_tower(cfg, hub))
    loss_fn = lambda p: jnp.mean(jnp.square(nnx.merge(graph, p)(jnp.asarray(frames))))  # noqa: E731
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    ours = export_vision_state_dict(nnx.merge(graph, grads))

    model.zero_grad()
    rows = torch.as_tensor(reference_rows(frames, cfg.vision).reshape(-1, cfg.vision.patch_dim))
    grid = torch.tensor([video_grid(cfg)] * BATCH)
    ref_loss = torch.stack(list(model.get_video_features(rows, grid).pooler_output)).square().mean()
    ref_loss.backward()
    np.testing.assert_allclose(float(loss), ref_loss.item(), rtol=1e-5)
    for name, p in model.model.visual.named_parameters():
        ref = p.grad.numpy()
        scale = np.max(np.abs(ref))
        assert scale > 0, name
        np.testing.assert_allclose(ours["visual." + name], ref, atol=2e-5 * scale, rtol=0, err_msg=name)
