"""HF checkpoint I/O: our safetensors reader/writer against the `safetensors` package, video
logits against transformers' LlavaOnevision (tiny random models, fp32, CPU), every naming,
sharding, bare files, text-only Qwen2 / Llama, stored dtypes, exact round trips, clear errors."""

import copy
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models import (
    build_model, get_preset, load_hf, num_video_tokens, safetensors_io as st, save_hf,
)
from leanpo_jax.models.llava_onevision.hf_config import config_from_hf
from leanpo_jax.models.llava_onevision.hf_io import detect_naming

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import save_file as ref_save_numpy  # noqa: E402
from safetensors.torch import load_file as ref_load_torch  # noqa: E402
from safetensors.torch import save_file as ref_save_torch  # noqa: E402

VOCAB, IMAGE_ID, VIDEO_ID = 320, 318, 319
FRAMES, BATCH = 2, 2
TOL = 1e-4


# ------------------------------------------------------------------------------------- helpers
def randomize(model, seed):
    """Every parameter random and non-trivial (norm scales around 1, biases non-zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_scale = name.endswith("weight") and "norm" in name
            p.copy_(1.0 + 0.2 * noise if is_scale else 0.1 * noise)
    return model.eval()


def text_kwargs(tied, **over):
    kw = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
              rope_theta=10000.0)
    kw.update(over)
    return kw


def hf_video_model(tmp_path_factory, name, *, tied, layers, feature_layer, head=False):
    """A random tiny LlavaOnevision (GQA, 3x3 patch grid) saved with save_pretrained."""
    cfg = transformers.LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", **text_kwargs(tied)),
        vision_config=dict(model_type="siglip_vision_model", image_size=24, patch_size=8,
                           hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=4, vision_use_head=head),
        vision_feature_layer=feature_layer, vision_feature_select_strategy="full",
        image_token_index=IMAGE_ID, video_token_index=VIDEO_ID, tie_word_embeddings=tied)
    model = randomize(transformers.LlavaOnevisionForConditionalGeneration(cfg), seed=layers)
    folder = str(tmp_path_factory.mktemp(name))
    model.save_pretrained(folder)
    return model, folder


def state_leaves(model):
    return jax.tree_util.tree_leaves_with_path(nnx.state(model))


def assert_same_model(a, b, *, config=True):
    """Same config, same parameter and hf_extra tree, every array bit-identical."""
    if config:
        assert a.config == b.config
    la, lb = state_leaves(a), state_leaves(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
        assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


@nnx.jit
def video_logits(model, ids, frames):
    return model(ids, video_embeds=model.encode_video(frames)) @ model.lm_head_kernel()


@nnx.jit
def text_logits(model, ids):
    return model(ids) @ model.lm_head_kernel()


@pytest.fixture(scope="module")
def video_prompt():
    """Two rows: text, exactly num_video_tokens(F) placeholders, text; pixels [B, F, 3, H, W]."""
    n = num_video_tokens(get_preset("tiny"), FRAMES)  # the same 3x3 grid, bilinear, one_token
    rng = np.random.default_rng(0)
    rows = [np.concatenate([rng.integers(0, IMAGE_ID, 4), np.full(n, VIDEO_ID),
                            rng.integers(0, IMAGE_ID, 3)]) for _ in range(BATCH)]
    pixels = rng.uniform(-1, 1, (BATCH, FRAMES, 3, 24, 24)).astype(np.float32)
    return np.stack(rows).astype(np.int64), pixels


def torch_video_logits(model, prompt):
    ids, pixels = prompt
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids),
                    pixel_values_videos=torch.from_numpy(pixels))
    return out.logits.numpy()


def our_video_logits(model, prompt):
    ids, pixels = prompt
    frames = jnp.asarray(pixels.transpose(0, 1, 3, 4, 2))  # channels-last
    return np.asarray(video_logits(model, jnp.asarray(ids), frames))


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """Tied head, 2 SigLIP layers, vision_feature_layer=-1: (torch model, folder, ours)."""
    model, folder = hf_video_model(tmp_path_factory, "tied", tied=True, layers=2,
                                   feature_layer=-1)
    return model, folder, load_hf(folder)


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """Untied, 3 SigLIP layers + head, vision_feature_layer=-2 (we run 2 layers)."""
    model, folder = hf_video_model(tmp_path_factory, "deep", tied=False, layers=3,
                                   feature_layer=-2, head=True)
    return model, folder, load_hf(folder)


@pytest.fixture(scope="module", params=["tied", "deep"])
def video(request):
    return request.getfixturevalue(request.param)


# ------------------------------------------------------------------------------ safetensors io
ALL_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64,
              "I64": np.int64, "I32": np.int32, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def sample_tensors():
    rng = np.random.default_rng(1)
    out = {f"t.{code}": (rng.normal(size=(3, 5)) * 50).astype(dt)
           for code, dt in ALL_DTYPES.items()}
    out["scalar"] = np.array(2.5, np.float32)
    out["empty"] = np.zeros((0, 4), np.float32)
    return out


def test_our_files_load_with_safetensors_and_back(tmp_path):
    tensors = sample_tensors()
    path = st.save_file(tensors, str(tmp_path / "ours.safetensors"), metadata={"format": "pt"})
    ref = ref_load_torch(path)  # the torch backend holds bf16
    for k, v in tensors.items():
        got = ref[k].float().numpy() if k == "t.BF16" else ref[k].numpy()
        assert got.shape == v.shape and np.array_equal(got, v.astype(got.dtype)), k
    ckpt = st.open_checkpoint(path)
    assert ckpt.files[path].metadata == {"format": "pt"}
    for k, v in tensors.items():
        assert ckpt.info(k) == (np.dtype(v.dtype), v.shape)
        assert ckpt[k].dtype == v.dtype and np.array_equal(ckpt[k], v), k

    # The reference writer's files (torch for bf16, numpy for the rest) read back exactly.
    no_bf16 = {k: v for k, v in tensors.items() if k != "t.BF16"}
    ref_save_numpy(no_bf16, str(tmp_path / "a.safetensors"))
    bf16 = torch.from_numpy(tensors["t.BF16"].astype(np.float32)).to(torch.bfloat16)
    ref_save_torch({"b": bf16}, str(tmp_path / "b.safetensors"))
    back = st.load_file(str(tmp_path / "a.safetensors"))
    assert all(np.array_equal(back[k], tensors[k]) and back[k].dtype == tensors[k].dtype
               for k in back) and len(back) == len(tensors) - 1
    b = st.load_file(str(tmp_path / "b.safetensors"))["b"]
    assert b.dtype == np.dtype(ml_dtypes.bfloat16) and np.array_equal(b, tensors["t.BF16"])


def test_sharded_write_and_lazy_read(tmp_path):
    tensors = {f"w{i}": np.full((64, 16), i, np.float32) for i in range(5)}  # 4 KiB each
    specs = [(k, v.dtype, v.shape) for k, v in tensors.items()]
    paths = st.write_checkpoint(str(tmp_path), specs, tensors.values(), max_shard_bytes=9000)
    assert [os.path.basename(p) for p in paths] == [
        f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.load(open(tmp_path / st.INDEX_FILE))
    assert index["metadata"]["total_size"] == 5 * 4096 and len(index["weight_map"]) == 5
    ckpt = st.open_checkpoint(str(tmp_path))
    assert sorted(ckpt) == sorted(tensors) and all(np.array_equal(ckpt[k], v)
                                                   for k, v in tensors.items())
    assert ref_load_torch(paths[2])["w4"].shape == (64, 16)
    with pytest.raises(ValueError, match="w1"):
        st.write_checkpoint(str(tmp_path / "bad"), specs, [tensors["w0"], tensors["w0"][:1]])


# --------------------------------------------------------------------------- video checkpoints
def test_video_logits_match_transformers(video, video_prompt):
    torch_model, _, ours = video
    ref = torch_video_logits(torch_model, video_prompt)
    got = our_video_logits(ours, video_prompt)
    err = np.abs(got - ref).max()
    print(f"video logits max abs err vs transformers: {err:.2e} "
          f"(|logits| max {np.abs(ref).max():.2f})")
    assert err <= TOL
    assert nnx.state(ours, nnx.Param)  # a concrete model: no placeholders left
    assert not any(isinstance(x, jax.ShapeDtypeStruct) for _, x in state_leaves(ours))


def test_feature_layer_minus_two_runs_two_of_three_layers(deep):
    _, _, ours = deep
    assert ours.config.vision.num_layers == 2 and not ours.config.text.tie_word_embeddings
    extra = ours.hf_extra.get_value()
    assert "vision_tower.vision_model.head.probe" in extra
    assert sum(".encoder.layers.2." in k for k in extra) == 16


def test_save_hf_loads_in_transformers_identically(video, video_prompt, tmp_path):
    torch_model, _, ours = video
    save_hf(ours, str(tmp_path))
    cls = transformers.LlavaOnevisionForConditionalGeneration
    reloaded, info = cls.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not any(info.values()), info
    want, got = torch_model.state_dict(), reloaded.state_dict()
    assert set(want) == set(got) and any("post_layernorm" in k for k in got)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    assert np.array_equal(torch_video_logits(reloaded.eval(), video_prompt),
                          torch_video_logits(torch_model, video_prompt))
    names = st.open_checkpoint(str(tmp_path))
    assert detect_naming(names) == "llava-hf"
    assert all(k.startswith("vision_tower.vision_model.") for k in names if "vision" in k)


def test_load_of_save_is_bit_exact(video, tmp_path):
    ours = video[2]
    assert_same_model(load_hf(save_hf(ours, str(tmp_path))), ours)
    save_hf(ours, str(tmp_path), max_shard_bytes=100_000)  # replaces the single file
    assert os.path.isfile(tmp_path / st.INDEX_FILE)
    assert not os.path.exists(tmp_path / st.SINGLE_FILE)
    assert_same_model(load_hf(str(tmp_path)), ours)


def lmms_key(key):
    """transformers-5 file name -> the lmms-lab original name."""
    for old, new in (("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."),
                     ("vision_tower.", "model.vision_tower.vision_tower.vision_model."),
                     ("multi_modal_projector.linear_1.", "model.mm_projector.0."),
                     ("multi_modal_projector.linear_2.", "model.mm_projector.2."),
                     ("image_newline", "model.image_newline")):
        if key.startswith(old):
            return new + key[len(old):]
    raise AssertionError(key)


def test_lmms_lab_naming_and_config(tied, tmp_path):
    _, folder, ours = tied
    ref_save_numpy({lmms_key(k): v for k, v in st.load_file(folder).items()},
                   str(tmp_path / "model.safetensors"))
    # The tower is named by a local SigLIP folder: 3 layers, select -2 -> the 2 stored ones.
    os.makedirs(tmp_path / "siglip")
    vision = dict(model_type="siglip_vision_model", image_size=24, patch_size=8, hidden_size=32,
                  intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)
    json.dump({"vision_config": vision}, open(tmp_path / "siglip" / "config.json", "w"))
    config = dict(architectures=["LlavaQwenForCausalLM"], model_type="llava_qwen",
                  **text_kwargs(True), rms_norm_eps=1e-6, max_position_embeddings=32768,
                  mm_vision_tower="siglip", mm_vision_select_layer=-2, mm_hidden_size=32,
                  mm_projector_type="mlp2x_gelu", mm_spatial_pool_mode="bilinear",
                  mm_spatial_pool_stride=2, mm_newline_position="one_token",
                  image_token_index=IMAGE_ID, video_token_index=VIDEO_ID)
    json.dump(config, open(tmp_path / "config.json", "w"))
    assert_same_model(load_hf(str(tmp_path)), ours)


def test_in_memory_naming(deep, tmp_path):
    torch_model, folder, ours = deep
    ref_save_torch({k: v.contiguous() for k, v in torch_model.state_dict().items()},
                   str(tmp_path / "model.safetensors"))
    with open(os.path.join(folder, "config.json")) as src:
        (tmp_path / "config.json").write_text(src.read())
    assert_same_model(load_hf(str(tmp_path)), ours)


def test_sharded_checkpoint_with_index(tied, tmp_path):
    torch_model, _, ours = tied
    torch_model.save_pretrained(str(tmp_path), max_shard_size="100KB")
    assert os.path.isfile(tmp_path / st.INDEX_FILE)
    assert_same_model(load_hf(str(tmp_path)), ours)


def test_bare_safetensors_file_with_preset_or_config(tmp_path):
    model = build_model("tiny", seed=3)
    folder = save_hf(model, str(tmp_path / "tiny"))
    bare = os.path.join(folder, st.SINGLE_FILE)
    assert_same_model(load_hf(bare, preset="tiny"), model)
    assert_same_model(load_hf(bare, config=model.config), model)
    cast = load_hf(bare, preset="tiny", dtype="bfloat16")
    assert cast.config.dtype == cast.config.param_dtype == "bfloat16"
    for (_, a), (_, b) in zip(state_leaves(cast), state_leaves(model)):
        assert a.dtype == jnp.bfloat16 and np.array_equal(a, b.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match="no config.json.*preset="):
        load_hf(bare)
    with pytest.raises(ValueError, match="not both"):
        load_hf(bare, preset="tiny", config=model.config)


def test_pool_and_newline_layouts_survive_save(tmp_path):
    config = get_preset("tiny").replace(pool_mode="average", newline="grid", num_frames=3)
    model = build_model(config, seed=1)
    with pytest.warns(UserWarning, match="grid"):
        save_hf(model, str(tmp_path))
    assert_same_model(load_hf(str(tmp_path)), model)


# ------------------------------------------------------------------------ text-only checkpoints
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_text_only_causal_lm(arch, tmp_path):
    if arch == "qwen2":
        cfg = transformers.Qwen2Config(**text_kwargs(True))
        model = transformers.Qwen2ForCausalLM(cfg)
    else:  # no biases, untied, head_dim != hidden / heads
        cfg = transformers.LlamaConfig(**text_kwargs(False, head_dim=32), attention_bias=False)
        model = transformers.LlamaForCausalLM(cfg)
    randomize(model, seed=7)
    model.save_pretrained(str(tmp_path / "hf"))
    ours = load_hf(str(tmp_path / "hf"))
    assert ours.config.vision is None and ours.vision_tower is None
    assert ours.config.text.attention_bias == (arch == "qwen2")
    ids = np.random.default_rng(2).integers(0, VOCAB, (2, 9))
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids)).logits.numpy()
    err = np.abs(np.asarray(text_logits(ours, jnp.asarray(ids))) - ref).max()
    print(f"{arch} text-only logits max abs err: {err:.2e} (|logits| max "
          f"{np.abs(ref).max():.2f}, head_dim {ours.config.text.resolved_head_dim})")
    assert err <= TOL
    save_hf(ours, str(tmp_path / "ours"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "ours"))
    want, got = model.state_dict(), reloaded.state_dict()
    assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want)


# ----------------------------------------------------------------------------- dtypes, errors
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stored_dtype_is_kept_and_dtype_casts(tied, dtype, tmp_path):
    torch_model, _, _ = tied
    copy.deepcopy(torch_model).to(dtype).save_pretrained(str(tmp_path / "hf"))
    ours = load_hf(str(tmp_path / "hf"))
    name = str(dtype).split(".")[-1]
    assert ours.config.param_dtype == ours.config.dtype == name
    assert {x.dtype for _, x in state_leaves(ours)} == {jnp.dtype(name)}
    original = ref_load_torch(os.path.join(tmp_path / "hf", st.SINGLE_FILE))
    written = ref_load_torch(os.path.join(save_hf(ours, str(tmp_path / "ours")), st.SINGLE_FILE))
    renamed = {k.replace("vision_tower.", "vision_tower.vision_model."): v
               for k, v in original.items()}
    assert set(renamed) <= set(written)
    assert all(written[k].dtype == dtype and torch.equal(written[k], v) for k, v in renamed.items())
    upcast = load_hf(str(tmp_path / "hf"), dtype="float32")
    assert upcast.config.param_dtype == "float32"
    for (_, a), (_, b) in zip(state_leaves(upcast), state_leaves(ours)):
        assert a.dtype == jnp.float32 and np.array_equal(np.asarray(a), np.asarray(b, np.float32))


def test_unknown_and_missing_tensors_are_named(tied, tmp_path):
    _, folder, _ = tied
    tensors = st.load_file(folder)
    with open(os.path.join(folder, "config.json")) as src:
        config_text = src.read()
    drop = ["language_model.model.layers.1.mlp.up_proj.weight", "vision_tower.post_layernorm.bias"]
    mystery = "language_model.model.mystery.weight"
    for case, sd in {
        "unknown": dict(tensors, **{mystery: np.zeros(3, np.float32)}),
        "missing": {k: v for k, v in tensors.items() if k not in drop},
    }.items():
        (tmp_path / case).mkdir()
        st.save_file(sd, str(tmp_path / case / st.SINGLE_FILE))
        (tmp_path / case / "config.json").write_text(config_text)
    with pytest.raises(ValueError, match=r"1 unknown tensors: \['language_model\.model\.mystery"):
        load_hf(str(tmp_path / "unknown"))
    with pytest.raises(ValueError, match="2 tensors missing") as err:
        load_hf(str(tmp_path / "missing"))
    assert drop[0] in str(err.value)
    assert "vision_tower.vision_model.post_layernorm.bias" in str(err.value)
    with pytest.raises(ValueError, match="does not fit"):
        load_hf(folder, config=get_preset("tiny"))


# ---------------------------------------------------------------------- real-world config.json
def test_hub_llava_hf_config_matches_preset():
    """llava-onevision-qwen2-0.5b-ov-hf's config.json (transformers 4 era: legacy rope_theta,
    the tie flag in text_config only) gives the preset's shapes, with its own padded vocab."""
    d = dict(
        architectures=["LlavaOnevisionForConditionalGeneration"], model_type="llava_onevision",
        image_token_index=151646, video_token_index=151647, projector_hidden_act="gelu",
        tie_word_embeddings=False, use_image_newline_parameter=True,
        vision_aspect_ratio="anyres_max_9", vision_feature_layer=-1,
        vision_feature_select_strategy="full", torch_dtype="float16",
        text_config=dict(
            architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=896,
            intermediate_size=4864, max_position_embeddings=32768, num_attention_heads=14,
            num_hidden_layers=24, num_key_value_heads=2, rope_theta=1000000.0,
            tie_word_embeddings=True, vocab_size=152000, torch_dtype="bfloat16"),
        vision_config=dict(
            hidden_size=1152, image_size=384, intermediate_size=4304,
            model_type="siglip_vision_model", num_attention_heads=16, num_hidden_layers=26,
            patch_size=14, vision_use_head=False))
    preset = get_preset("llava-ov-qwen2-0.5b")
    want = preset.replace(text=dataclasses.replace(preset.text, vocab_size=152000))
    assert config_from_hf(d) == want


def test_lmms_lab_llava_video_config_matches_preset():
    """LLaVA-Video-7B-Qwen2's LlavaQwenForCausalLM config: so400m named, select layer -2 of
    27 -> 26 layers, grid newlines, bilinear pooling."""
    d = dict(
        architectures=["LlavaQwenForCausalLM"], model_type="llava", hidden_size=3584,
        intermediate_size=18944, max_position_embeddings=32768, num_attention_heads=28,
        num_hidden_layers=28, num_key_value_heads=4, rms_norm_eps=1e-06, rope_theta=1000000.0,
        tie_word_embeddings=False, vocab_size=152064, image_token_index=151646,
        mm_hidden_size=1152, mm_newline_position="grid", mm_patch_merge_type="spatial_unpad",
        mm_projector_type="mlp2x_gelu", mm_spatial_pool_mode="bilinear",
        mm_spatial_pool_stride=2, mm_vision_select_feature="patch", mm_vision_select_layer=-2,
        mm_vision_tower="google/siglip-so400m-patch14-384", frames_upbound=64,
        torch_dtype="bfloat16", use_sliding_window=False, sliding_window=131072)
    assert config_from_hf(d) == get_preset("llava-video-qwen2-7b")
    with pytest.raises(ValueError, match="mm_vision_tower='openai/clip"):
        config_from_hf(dict(d, mm_vision_tower="openai/clip-vit-large-patch14-336"))
