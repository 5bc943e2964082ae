"""The LLaVA-NeXT-Video family behind the seam: config.json parsing (llava-hf, lmms-lab, RoPE
scaling in either place), the data interface, token counts, and bad input named clearly."""

import copy
import json
import os

import numpy as np
import pytest

from leanpo_jax.data import tokenize
from leanpo_jax.models import build_model, checkpoint_family, family_of, get_preset, load_hf, save_hf
from leanpo_jax.models import num_video_tokens, resolve_model, safetensors_io as st
from leanpo_jax.models.family import NUCLEUS
from leanpo_jax.models.llava_next_video.config import CLIP_MEAN
from leanpo_jax.models.llava_next_video.hf_config import config_from_hf, hf_config_dict

from llama_tokenizer import write_llama_tokenizer

transformers = pytest.importorskip("transformers")

TINY = get_preset("llava-next-video-tiny")


def llava_hf_dict(**text_over):
    """A config.json as the llava-hf conversion writes it for LLaVA-NeXT-Video-7B (shapes of 7B)."""
    text = dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096)
    text.update(text_over)
    return dict(model_type="llava_next_video", architectures=["LlavaNextVideoForConditionalGeneration"],
                text_config=text, vision_config=dict(model_type="clip_vision_model", hidden_size=1024,
                                                     intermediate_size=4096, num_hidden_layers=24,
                                                     num_attention_heads=16, image_size=336, patch_size=14),
                vision_feature_layer=-2, vision_feature_select_strategy="default",
                spatial_pool_mode="average", spatial_pool_stride=2, image_token_index=32001,
                video_token_index=32000, tie_word_embeddings=False)


def test_llava_hf_7b_config_is_the_preset():
    d = llava_hf_dict(rope_scaling={"type": "linear", "factor": 2.0})
    assert checkpoint_family("unused", d).name == "llava_next_video"
    assert config_from_hf(d) == get_preset("llava-next-video-7b")


@pytest.mark.parametrize("where", ["text rope_scaling", "text rope_parameters", "loose text keys",
                                   "top-level rope_scaling", "none"])
def test_linear_rope_is_read_from_either_place(where):
    linear = {"type": "linear", "factor": 2.0}
    if where == "loose text keys":  # what the llava-hf conversion script's text_config.update writes
        d = llava_hf_dict(**linear)
    elif where == "text rope_scaling":
        d = llava_hf_dict(rope_scaling=linear)
    elif where == "text rope_parameters":
        d = llava_hf_dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    else:
        d = llava_hf_dict()
        if where != "none":
            d["rope_scaling"] = linear  # the conversion script's loose top-level key
    assert config_from_hf(d).text.rope_linear_factor == (1.0 if where == "none" else 2.0)


def test_unsupported_rope_types_are_refused_by_name():
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
    with pytest.raises(ValueError, match=r"config\.json.*rope type 'llama3' is not supported.*'default', 'linear'"):
        config_from_hf(llava_hf_dict(rope_parameters=llama3))


def lmms_lab_dict(**over):
    d = dict(architectures=["LlavaLlamaForCausalLM"], model_type="llava", vocab_size=32000, hidden_size=4096,
             intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
             rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096,
             rope_scaling={"type": "linear", "factor": 2.0}, mm_vision_tower="openai/clip-vit-large-patch14-336",
             mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
             mm_hidden_size=1024, mm_spatial_pool_mode="average", mm_spatial_pool_stride=2,
             mm_patch_merge_type="spatial_unpad", mm_newline_position="no_token")
    d.update(over)
    return d


def test_lmms_lab_files_go_to_this_family_with_the_fork_order():
    d = lmms_lab_dict()
    assert checkpoint_family("unused", d).name == "llava_next_video"
    c = config_from_hf(d)
    assert not c.pool_before_projector and c.vision.num_layers == 23 and c.text.rope_linear_factor == 2.0
    assert c.newline == "no_token" and num_video_tokens(c, 16) == 2304
    grid = config_from_hf(lmms_lab_dict(mm_newline_position="grid"))
    assert num_video_tokens(grid, 16) == 16 * 12 * 13 == 2496
    assert config_from_hf(lmms_lab_dict(mm_patch_merge_type="flat", mm_newline_position="grid")).newline == "no_token"
    # A SigLIP lmms-lab file (LLaVA-Video-Qwen2) still belongs to OneVision.
    siglip = lmms_lab_dict(mm_vision_tower="google/siglip-so400m-patch14-384", model_type="qwen2")
    assert checkpoint_family("unused", siglip).name == "llava_onevision"


def test_interface_frames_template_decoding_and_token_counts():
    family = family_of(TINY)
    interface = family.interface(TINY)
    assert interface.frames.resize == "shortest_edge_crop" and interface.frames.size == (32, 32)
    assert interface.frames.mean == CLIP_MEAN
    assert interface.video_tokens(4) == 4 * 2 * 2 and interface.video_token_index == 32000
    assert interface.template.bos == "<s>" and interface.template.response_end == "</s>"
    assert interface.tokenizer is None  # no Llama tokenizer ships: data.tokenizer must name one
    assert family.decoding_defaults(TINY) == NUCLEUS
    assert num_video_tokens(get_preset("llava-next-video-7b"), 16) == 2304
    assert family.vision_flops(get_preset("llava-next-video-7b"), 16) > 16 * 577 * 23 * 2 * 12e6


def test_transformers_equivalent_and_what_has_none():
    family = family_of(TINY)
    name, d = family.transformers_model(TINY)
    assert name == "LlavaNextVideoForConditionalGeneration" and d["model_type"] == "llava_next_video"
    assert d["text_config"]["rope_parameters"]["rope_type"] == "linear"
    with pytest.raises(ValueError, match="pool_before_projector=False"):
        family.transformers_model(TINY.replace(pool_before_projector=False))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("nv_saved"))
    save_hf(build_model(TINY.replace(newline="grid", pool_before_projector=False), seed=3), folder)
    return folder


def test_our_config_keys_survive_a_save(saved):
    source = resolve_model(init_from=saved)
    assert source.family.name == "llava_next_video"
    assert source.config.newline == "grid" and not source.config.pool_before_projector
    with open(os.path.join(saved, "config.json")) as f:
        assert json.load(f)["leanpo_jax"]["family"] == "llava_next_video"


def _rewrite(folder, out, change):
    ckpt = st.open_checkpoint(folder)
    tensors = {k: np.asarray(ckpt[k]) for k in ckpt}
    change(tensors)
    os.makedirs(out, exist_ok=True)
    for name in ("config.json",):
        with open(os.path.join(folder, name)) as src, open(os.path.join(out, name), "w") as dst:
            dst.write(src.read())
    specs = [(k, v.dtype, v.shape) for k, v in tensors.items()]
    st.write_checkpoint(out, specs, iter(tensors.values()), metadata={"format": "pt"})
    return out


def test_missing_and_unknown_tensors_are_named(saved, tmp_path):
    key = "language_model.model.layers.1.mlp.up_proj.weight"
    missing = _rewrite(saved, str(tmp_path / "missing"), lambda t: t.pop(key))
    with pytest.raises(ValueError, match=r"1 tensors missing.*layers\.1\.mlp\.up_proj\.weight"):
        load_hf(missing)
    extra = _rewrite(saved, str(tmp_path / "extra"),
                     lambda t: t.__setitem__("multi_modal_projector.linear_3.weight", np.zeros((2, 2), np.float32)))
    with pytest.raises(ValueError, match=r"1 unknown tensors.*linear_3"):
        load_hf(extra)


def test_preprocessor_config_that_disagrees_is_an_error(saved, tmp_path):
    folder = str(tmp_path / "bad_pre")
    _rewrite(saved, folder, lambda t: None)
    with open(os.path.join(saved, "video_preprocessor_config.json")) as f:
        pre = json.load(f)
    bad = copy.deepcopy(pre)
    bad["crop_size"] = {"height": 48, "width": 48}
    with open(os.path.join(folder, "video_preprocessor_config.json"), "w") as f:
        json.dump(bad, f)
    with pytest.raises(ValueError, match=r"video_preprocessor_config\.json gives frames of \(48, 48\)"):
        resolve_model(init_from=folder)


def test_the_checkpoint_tokenizer_must_hold_the_video_placeholder(saved, tmp_path):
    """A Llama tokenizer whose id 32000 is not <video> is refused, naming both files and the fix;
    with <video> at 32000 the vicuna prompt holds one BOS and the placeholder ids."""
    interface = resolve_model(init_from=saved).interface()
    without = write_llama_tokenizer(str(tmp_path / "no_video"), added=("<image>", "<video>"))
    with pytest.raises(ValueError, match=r"video placeholder is '<video>' \(video_token_index 32000\).*"
                                         r"this tokenizer's id 32000 is '<image>'"):
        tokenize.ChatTokenizer.for_model(interface, without)
    chat = tokenize.ChatTokenizer.for_model(interface, write_llama_tokenizer(str(tmp_path / "ok")))
    ids = chat.prompt_ids("What moves?", 8)
    assert ids[0] == 1 and int(np.sum(ids == 1)) == 1 and int(np.sum(ids == 32000)) == 8


def test_the_7b_preset_has_the_checkpoint_size():
    """Vicuna-7B (32064 rows, untied) + 23 CLIP-L layers + projector: 7.051B (7.063B with the
    24th CLIP layer the checkpoint also holds), as llava-hf/LLaVA-NeXT-Video-7B-hf (~7.06B)."""
    from leanpo_jax.models import abstract_model
    from leanpo_jax.models.params import num_params

    model = abstract_model(get_preset("llava-next-video-7b"))
    assert num_params(model.language_model) == 32064 * 4096 * 2 + 32 * (4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096) + 4096
    assert num_params(model.connector) == 1024 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096
    clip_layer = 4 * (1024 * 1024 + 1024) + 2 * 1024 * 4096 + 4096 + 1024 + 4 * 1024
    assert num_params(model.vision_tower) == 24 * clip_layer - clip_layer + 577 * 1024 + 1024 + 14 * 14 * 3 * 1024 + 4 * 1024
