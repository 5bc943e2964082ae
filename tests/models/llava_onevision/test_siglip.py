"""SigLIP tower: parity with transformers' SiglipVisionModel (fp32, CPU), state-dict round trip,
layer selection (no post-LN, extra checkpoint layers ignored), remat, dtypes, logical sharding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from leanpo_jax.models import get_preset
from leanpo_jax.models.params import num_params
from leanpo_jax.models.llava_onevision.siglip import (
    SiglipVisionTower, export_siglip_state_dict, layer_norm, load_siglip_state_dict,
    siglip_hf_table,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CFG = get_preset("tiny")  # image 24, patch 8 -> odd 3x3 grid, hidden 32, 4 heads, 2 layers
VISION_AXES = {"layers", "vision_embed", "vision_heads", "vision_head_dim", "vision_mlp", None}


def hf_vision_config(vision, num_layers, use_head=True):
    return transformers.SiglipVisionConfig(
        hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=vision.num_heads,
        num_channels=vision.num_channels, image_size=vision.image_size,
        patch_size=vision.patch_size, hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=vision.layer_norm_eps, vision_use_head=use_head,
    )


def random_torch_siglip(num_layers, seed, vision=CFG.vision):
    """A SiglipVisionModel with every tensor randomised (LayerNorm weights around 1, not 1)."""
    torch.manual_seed(seed)
    model = transformers.SiglipVisionModel(hf_vision_config(vision, num_layers)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            norm_weight = ("layer_norm" in name or "layernorm" in name) and name.endswith("weight")
            p.copy_(1.0 + 0.2 * noise if norm_weight else 0.15 * noise)
    return model


def to_numpy_state(model):
    """Hub-checkpoint names ("vision_model.*"); transformers 5's SiglipVisionModel itself names
    its tensors without that prefix (load those with prefix="")."""
    return {"vision_model." + k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def forward():
    """One compiled forward shared by every test (same shapes -> one trace)."""
    return nnx.jit(lambda tower, x: tower(x))


@pytest.fixture(scope="module")
def case():
    model = random_torch_siglip(CFG.vision.num_layers, seed=0)
    rng = np.random.default_rng(0)
    pixels_nchw = rng.uniform(-1, 1, (3, 3, 24, 24)).astype(np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(pixels_nchw), output_hidden_states=True)
    tower = SiglipVisionTower(CFG, rngs=nnx.Rngs(0))
    state = to_numpy_state(model)
    load_siglip_state_dict(tower, state)
    return dict(
        model=model, tower=tower, state=state,
        pixels=jnp.asarray(pixels_nchw.transpose(0, 2, 3, 1)),
        hidden_last=out.hidden_states[-1].numpy(),
        last_hidden=out.last_hidden_state.numpy(),
    )


def test_parity_with_transformers_before_post_layernorm(case, forward):
    ours = np.asarray(forward(case["tower"], case["pixels"]))
    assert ours.shape == (3, CFG.vision.num_patches, CFG.vision.hidden_size)
    err = np.abs(ours - case["hidden_last"]).max()
    print(f"siglip parity max abs err: {err:.3e}")
    assert err <= 1e-4
    # post_layernorm is loaded (applying it reproduces last_hidden_state) but never applied.
    post = case["tower"].post_layernorm
    with_post = layer_norm(jnp.asarray(ours), post.scale[...], post.bias[...],
                           CFG.vision.layer_norm_eps)
    assert np.abs(np.asarray(with_post) - case["last_hidden"]).max() <= 1e-4
    assert np.abs(ours - case["last_hidden"]).max() > 1e-2


def test_state_dict_round_trip(case):
    exported = export_siglip_state_dict(case["tower"])
    expected = {k: v for k, v in case["state"].items() if ".head." not in k}
    assert set(exported) == set(expected)
    assert "vision_model.post_layernorm.weight" in exported
    for key, value in expected.items():
        assert exported[key].shape == value.shape, key
        assert exported[key].dtype == value.dtype, key
        np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_checkpoint_with_extra_layer_loads_first_layers(forward, case):
    """LLaVA: a 27-layer SigLIP checkpoint feeds the 26th block's output (hidden_states[-2])."""
    model = random_torch_siglip(CFG.vision.num_layers + 1, seed=1)
    with torch.no_grad():
        out = model(torch.from_numpy(np.array(case["pixels"]).transpose(0, 3, 1, 2)),
                    output_hidden_states=True)
    tower = SiglipVisionTower(CFG, rngs=nnx.Rngs(1))
    load_siglip_state_dict(tower, to_numpy_state(model))
    ours = np.asarray(forward(tower, case["pixels"]))
    err = np.abs(ours - out.hidden_states[-2].numpy()).max()
    print(f"siglip 27->26-style layer drop max abs err: {err:.3e}")
    assert err <= 1e-4


def test_remat_grads_match_torch(case):
    """Gradients through the remat'd, scanned tower equal torch's autograd (HF layouts via the
    exporter); [B, F, H, W, C] input keeps its leading dims."""
    model = case["model"]
    model.zero_grad()
    pixels = torch.from_numpy(np.array(case["pixels"]).transpose(0, 3, 1, 2))
    (model(pixels, output_hidden_states=True).hidden_states[-1] ** 2).sum().backward()
    torch_grads = {"vision_model." + n: p.grad.numpy() for n, p in model.named_parameters()
                   if p.grad is not None}  # post_layernorm and head are not on the path

    tower = SiglipVisionTower(CFG.replace(remat=True), rngs=nnx.Rngs(0))
    load_siglip_state_dict(tower, case["state"])
    x = case["pixels"].reshape((1,) + case["pixels"].shape)

    @nnx.jit
    def grad_fn(t):
        y = t(x)
        return nnx.grad(lambda m: jnp.sum(m(x) ** 2))(t), y

    grads, y = grad_fn(tower)
    assert y.shape == (1, 3, CFG.vision.num_patches, CFG.vision.hidden_size)
    np.testing.assert_allclose(np.asarray(y[0]), case["hidden_last"], atol=1e-4)
    holder = SiglipVisionTower(CFG, rngs=nnx.Rngs(0))
    nnx.update(holder, grads)
    worst = 0.0
    for key, g in export_siglip_state_dict(holder).items():
        ref = torch_grads.get(key, np.zeros_like(g))
        worst = max(worst, np.abs(g - ref).max() / max(np.abs(ref).max(), 1.0))
    print(f"siglip remat grad max rel err: {worst:.3e}")
    assert worst <= 1e-4


def test_non_multiple_image_size_and_bf16(case):
    """so400m's 384 = 27*14 + 6: the valid conv drops trailing pixels; bf16 compute runs."""
    vision = dataclasses.replace(CFG.vision, image_size=27)  # 3x3 patches of 8, 3 px dropped
    model = random_torch_siglip(CFG.vision.num_layers, seed=2, vision=vision)
    pixels = np.random.default_rng(2).uniform(-1, 1, (2, 3, 27, 27)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(pixels), output_hidden_states=True).hidden_states[-1]
    config = CFG.replace(vision=vision)
    tower = SiglipVisionTower(config, rngs=nnx.Rngs(0))
    load_siglip_state_dict(tower, to_numpy_state(model))
    ours = nnx.jit(lambda t, x: t(x))(tower, jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    err = np.abs(np.asarray(ours) - ref.numpy()).max()
    print(f"siglip parity (image 27, patch 8) max abs err: {err:.3e}")
    assert err <= 1e-4

    bf16 = SiglipVisionTower(CFG.replace(dtype="bfloat16"), rngs=nnx.Rngs(0))
    nnx.update(bf16, nnx.state(case["tower"], nnx.Param))
    assert bf16.layers.q_proj.kernel[...].dtype == jnp.float32  # param_dtype stays f32
    y = nnx.jit(lambda t, x: t(x))(bf16, case["pixels"])
    assert y.dtype == jnp.bfloat16
    rel = np.abs(np.asarray(y, np.float32) - case["hidden_last"]).max() / np.abs(
        case["hidden_last"]).max()
    assert rel < 5e-2


def test_every_param_has_logical_axes_and_shards_under_rules(case):
    """Built with no mesh: names only. Built under a mesh + rules: eagerly sharded, and loading
    a state dict keeps each parameter's sharding."""
    tower = SiglipVisionTower(CFG, rngs=nnx.Rngs(0))
    for path, var in nnx.to_flat_state(nnx.state(tower, nnx.Param)):
        names = var.get_metadata("out_sharding")
        assert len(names) == var.get_value().ndim, path
        assert set(names) <= VISION_AXES, (path, names)
    assert tower.layers.fc1.kernel.get_metadata("out_sharding") == (
        "layers", "vision_embed", "vision_mlp")

    mesh = jax.make_mesh((2, 4), ("fsdp", "tp"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = (("vision_embed", "fsdp"), ("vision_heads", "tp"), ("vision_mlp", "tp"),
             ("layers", None), ("vision_head_dim", None))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        sharded = SiglipVisionTower(CFG, rngs=nnx.Rngs(0))
        load_siglip_state_dict(sharded, case["state"])
        spec = sharded.layers.q_proj.kernel.get_value().sharding.spec
        assert spec == P(None, "fsdp", "tp", None)
        pspecs = nnx.get_partition_spec(nnx.state(sharded, nnx.Param))
        assert pspecs["layers"]["fc2"]["kernel"].get_value() == P(None, "tp", "fsdp")
        y = nnx.jit(lambda t, x: t(x))(sharded, case["pixels"])
    np.testing.assert_allclose(np.asarray(y), case["hidden_last"], atol=1e-4)


def test_so400m_shapes_and_hf_names():
    """The real 26-layer SigLIP-so400m: abstract build only (no weights, no compute)."""
    config = get_preset("llava-ov-qwen2-0.5b")
    tower = nnx.eval_shape(lambda: SiglipVisionTower(config, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(lambda t, x: t(x), tower,
                         jax.ShapeDtypeStruct((2, 4, 384, 384, 3), jnp.float32))
    assert out.shape == (2, 4, 729, 1152)
    assert tower.layers.q_proj.kernel.get_value().shape == (26, 1152, 16, 72)
    assert tower.patch_embed.kernel.get_value().shape == (14, 14, 3, 1152)
    # Same parameter count and names as transformers' model without the pooling head.
    with torch.device("meta"):
        hf = transformers.SiglipVisionModel(hf_vision_config(config.vision, 26, use_head=False))
    hf_names = set(hf.state_dict())
    assert {e.hf_key for e in siglip_hf_table(config, prefix="")} == hf_names
    assert num_params(tower) == sum(p.numel() for p in hf.parameters())
    assert config.vision.num_layers == 26
