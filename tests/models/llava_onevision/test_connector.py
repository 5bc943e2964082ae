"""Connector: pooling parity with torch (bilinear, align_corners=False; avg_pool2d), exact-GELU
projector parity, newline layouts and positions, HF round trip, preset token counts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models import get_preset, num_video_tokens
from leanpo_jax.models.llava_onevision.connector import (
    VideoConnector, export_connector_state_dict, insert_newlines, load_connector_state_dict,
    pool_frames,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

CFG = get_preset("tiny")  # 3x3 patch grid (odd), Dv 32, Dt 64
DV, DT = CFG.vision.hidden_size, CFG.text.hidden_size


def torch_pool(x, mode):
    """x [N, g*g, D] numpy -> torch-pooled [N, s*s, D] the way LLaVA / HF OV do it."""
    n, p, d = x.shape
    g = math.isqrt(p)
    t = torch.from_numpy(x).view(n, g, g, d).permute(0, 3, 1, 2)
    if mode == "bilinear":
        t = F.interpolate(t, size=(math.ceil(g / 2),) * 2, mode="bilinear", align_corners=False)
    else:
        t = F.avg_pool2d(t, kernel_size=2, stride=2)
    return t.permute(0, 2, 3, 1).reshape(n, -1, d).numpy()


@pytest.mark.parametrize("mode", ["bilinear", "average"])
@pytest.mark.parametrize("grid", [3, 5, 27])
def test_pooling_matches_torch(grid, mode):
    x = np.random.default_rng(grid).normal(size=(2, grid * grid, 8)).astype(np.float32)
    ours = np.asarray(pool_frames(jnp.asarray(x), mode))
    ref = torch_pool(x, mode)
    side = math.ceil(grid / 2) if mode == "bilinear" else grid // 2
    assert ours.shape == ref.shape == (2, side * side, 8)
    err = np.abs(ours - ref).max()
    print(f"{mode} pool {grid}->{side} max abs err: {err:.3e}")
    assert err <= 1e-5
    assert pool_frames(jnp.asarray(x), "none").shape == x.shape


@pytest.fixture(scope="module")
def torch_connector():
    """A torch Linear-GELU-Linear + newline with random weights, and its HF state dict."""
    torch.manual_seed(0)
    proj = torch.nn.Sequential(torch.nn.Linear(DV, DT), torch.nn.GELU(), torch.nn.Linear(DT, DT))
    with torch.no_grad():
        for p in proj.parameters():
            p.normal_(0.0, 0.3)  # pre-activations of O(1) where erf and tanh GELU differ
    newline = torch.randn(DT)
    state = {
        "multi_modal_projector.linear_1.weight": proj[0].weight.detach().numpy(),
        "multi_modal_projector.linear_1.bias": proj[0].bias.detach().numpy(),
        "multi_modal_projector.linear_2.weight": proj[2].weight.detach().numpy(),
        "multi_modal_projector.linear_2.bias": proj[2].bias.detach().numpy(),
        "image_newline": newline.numpy(),
    }
    return proj, newline, state


def build(config, state):
    conn = VideoConnector(config, rngs=nnx.Rngs(0))
    load_connector_state_dict(conn, state)
    return conn


def test_projector_matches_torch_and_uses_exact_gelu(torch_connector):
    proj, _, state = torch_connector
    conn = build(CFG, state)
    x = np.random.default_rng(0).normal(size=(2, 3, 9, DV)).astype(np.float32)
    ours = np.asarray(conn.project(jnp.asarray(x)))
    with torch.no_grad():
        ref = proj(torch.from_numpy(x)).numpy()
        tanh_ref = proj[2](F.gelu(proj[0](torch.from_numpy(x)), approximate="tanh")).numpy()
    err = np.abs(ours - ref).max()
    print(f"projector max abs err: {err:.3e}")
    assert err <= 1e-5
    assert np.abs(ours - tanh_ref).max() > 10 * max(err, 1e-6)  # would fail with tanh GELU


def test_state_dict_round_trip(torch_connector):
    _, _, state = torch_connector
    exported = export_connector_state_dict(build(CFG, state))
    assert set(exported) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    prefixed = export_connector_state_dict(build(CFG, state), prefix="model.")
    assert {"model.multi_modal_projector.linear_2.bias", "model.image_newline"} <= set(prefixed)


def torch_video_reference(proj, newline, feats, pool_mode, layout):
    """LLaVA order in torch: project -> pool per frame -> newlines (LLaVA-NeXT add_token_per_grid
    / add_token_per_frame; HF OV appends one newline per video)."""
    b, f, p, _ = feats.shape
    with torch.no_grad():
        x = proj(torch.from_numpy(feats)).numpy().reshape(b * f, p, -1)
    x = torch.from_numpy(torch_pool(x, pool_mode) if pool_mode != "none" else x)
    s, d = math.isqrt(x.shape[1]), x.shape[-1]
    out = []
    for i in range(b):
        v = x[i * f:(i + 1) * f]  # [F, s*s, D]
        if layout == "grid":
            g = v.view(f, 1, s, s, d).permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)
            g = torch.cat([g, newline[:, None, None].expand(d, f * s, 1)], dim=-1)
            out.append(g.flatten(1, 2).transpose(0, 1))
        elif layout == "frame":
            out.append(torch.cat([v, newline[None, None].expand(f, 1, d)], dim=1).flatten(0, 1))
        elif layout == "one_token":
            out.append(torch.cat([v.flatten(0, 1), newline[None]], dim=0))
        else:
            out.append(v.flatten(0, 1))
    return torch.stack(out).numpy()


@pytest.mark.parametrize("pool_mode,layout", [
    ("bilinear", "grid"), ("bilinear", "one_token"), ("average", "frame"), ("none", "no_token"),
])
def test_connector_matches_torch_pipeline(torch_connector, pool_mode, layout):
    proj, newline, state = torch_connector
    config = CFG.replace(pool_mode=pool_mode, newline=layout)
    conn = build(config, state)
    feats = np.random.default_rng(1).normal(size=(2, 3, 9, DV)).astype(np.float32)
    ours = np.asarray(nnx.jit(lambda m, x: m(x))(conn, jnp.asarray(feats)))
    ref = torch_video_reference(proj, newline, feats, pool_mode, layout)
    assert ours.shape == ref.shape == (2, num_video_tokens(config, 3), DT)
    err = np.abs(ours - ref).max()
    print(f"connector {pool_mode}/{layout} max abs err: {err:.3e}")
    assert err <= 1e-5


def test_newline_positions():
    """Tokens carry codes frame*100 + row*10 + col; the newline is -1. Row-major per frame,
    frames in time order, newlines exactly where each layout puts them."""
    b, f, s = 2, 3, 2
    codes = np.array([[fr * 100 + r * 10 + c for r in range(s) for c in range(s)]
                      for fr in range(f)], np.float32)
    x = jnp.broadcast_to(jnp.asarray(codes)[None, :, :, None], (b, f, s * s, 1))
    nl = -jnp.ones((1,))

    def seq(layout):
        out = np.asarray(insert_newlines(x, nl, layout))
        assert np.array_equal(out[0], out[1])
        return out[0, :, 0].astype(int).tolist()

    grid = [[fr * 100 + r * 10 + c for c in range(s)] + [-1] for fr in range(f) for r in range(s)]
    assert seq("grid") == sum(grid, [])
    frame = [[fr * 100 + r * 10 + c for r in range(s) for c in range(s)] + [-1] for fr in range(f)]
    assert seq("frame") == sum(frame, [])
    flat = codes.astype(int).reshape(-1).tolist()
    assert seq("one_token") == flat + [-1]
    assert seq("no_token") == flat
    counts = {"grid": f * s * (s + 1), "frame": f * (s * s + 1), "one_token": f * s * s + 1,
              "no_token": f * s * s}
    for layout, n in counts.items():
        assert len(seq(layout)) == n


@pytest.mark.parametrize("preset,frames,pool_mode,expected", [
    ("llava-video-qwen2-7b", 64, "bilinear", 13_440),  # 64 * 14 * 15, grid newlines
    ("llava-video-qwen2-7b", 64, "average", 11_648),   # 64 * 13 * 14
    ("llava-ov-qwen2-0.5b", 32, "bilinear", 6_273),    # 32 * 196 + 1, one_token
])
def test_preset_token_counts(preset, frames, pool_mode, expected):
    """Real-size connectors built abstractly: output length == num_video_tokens."""
    config = get_preset(preset).replace(pool_mode=pool_mode)
    assert num_video_tokens(config, frames) == expected
    conn = nnx.eval_shape(lambda: VideoConnector(config, rngs=nnx.Rngs(0)))
    feats = jax.ShapeDtypeStruct((1, frames, 729, config.vision.hidden_size), jnp.float32)
    out = nnx.eval_shape(lambda m, x: m(x), conn, feats)
    assert out.shape == (1, expected, config.text.hidden_size)
    assert conn.linear_1.kernel.get_value().shape == (1152, config.text.hidden_size)
    assert conn.linear_1.kernel.get_metadata("out_sharding") == ("vision_embed", "mlp")
    assert conn.linear_2.kernel.get_metadata("out_sharding") == ("mlp", "embed")
    assert conn.image_newline.get_metadata("out_sharding") == ("embed",)
