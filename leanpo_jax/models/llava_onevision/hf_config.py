"""config.json dicts <-> VideoLLMConfig (parsed with transformers' config classes; no torch).

Read: ours (a "leanpo_jax" sub-dict, written by `hf_config_dict`; it wins over the HF fields),
llava-hf `LlavaOnevisionConfig`, lmms-lab `LlavaQwenForCausalLM` (hidden_size etc. at the top,
mm_* keys) and plain qwen2 / llama configs. SigLIP layers run = num_hidden_layers + 1 +
feature layer when negative (vision_feature_layer / mm_vision_select_layer), the feature layer
itself otherwise. RoPE theta comes from v5 `rope_parameters` or legacy `rope_theta`.
Write: LlavaOnevisionConfig (Qwen2Config / LlamaConfig when text-only) `.to_dict()`;
`transformers_equivalent` gives the same dict without our keys, for reference runs.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from leanpo_jax.models.llava_onevision.config import NEWLINE_LAYOUTS, VideoLLMConfig, VisionConfig
from leanpo_jax.models.family_config import RUNTIME_FIELDS, local_tower_config, vision_layers_run
from leanpo_jax.models.text_config import TextConfig, hf_text_kwargs, text_config_from_hf

# Full google/siglip-so400m-patch14-384; lmms-lab configs name it and select layer -2 -> 26 run.
_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
               num_attention_heads=16, image_size=384, patch_size=14)
_UNSUPPORTED = "is not supported (llava_onevision, lmms-lab llava_qwen, qwen2 or llama)"
FAMILY_NAME = "llava_onevision"


def is_family_config(d: dict) -> bool:
    """True for the config.json dicts `config_from_hf` reads (see the module docstring)."""
    ours = d.get("leanpo_jax")
    if isinstance(ours, dict):
        return ours.get("family", FAMILY_NAME) == FAMILY_NAME
    kind = str(d.get("model_type", ""))
    # lmms-lab LlavaQwenForCausalLM configs are Qwen2 configs with mm_* keys.
    return kind in ("llava_onevision", "qwen2", "llama") or any(k.startswith("mm_") for k in d)


def _text_config(tc, *, tie: bool) -> TextConfig:
    return text_config_from_hf(tc, tie=tie)


def _vision_config(vc, feature_layer) -> VisionConfig:
    """SigLIP config of the full tower + the feature layer -> the layers actually run."""
    if getattr(vc, "model_type", "siglip_vision_model") not in ("siglip_vision_model", "siglip"):
        raise ValueError(f"vision model_type {vc.model_type!r} is not supported (SigLIP only)")
    used = vision_layers_run(vc.num_hidden_layers, feature_layer, "config.json")
    return VisionConfig(image_size=vc.image_size, patch_size=vc.patch_size,
                        num_channels=vc.num_channels, hidden_size=vc.hidden_size,
                        intermediate_size=vc.intermediate_size, num_layers=used,
                        num_heads=vc.num_attention_heads, layer_norm_eps=vc.layer_norm_eps)


def _lmms_vision(d: dict, base_dir: Optional[str]):
    """The full SigLIP config named by mm_vision_tower: a local folder's config.json (absolute
    or relative to the checkpoint), or so400m-patch14-384 by name."""
    from transformers import SiglipVisionConfig

    tower = d.get("mm_vision_tower") or d.get("vision_tower") or ""
    local = local_tower_config(tower, base_dir)
    if local is not None:
        return SiglipVisionConfig.from_dict(local)
    if "siglip-so400m-patch14-384" in tower:
        return SiglipVisionConfig(**_SO400M)
    raise ValueError(f"cannot tell the vision tower's shape from mm_vision_tower={tower!r}: give "
                     "a local folder holding its config.json, or pass config= / preset=")


def _llava_hf(d: dict) -> VideoLLMConfig:
    from transformers import LlavaOnevisionConfig

    if d.get("model_type") != "llava_onevision":
        raise ValueError(f"model_type {d.get('model_type')!r} {_UNSUPPORTED}")
    hf = LlavaOnevisionConfig.from_dict(d)
    if (hf.vision_feature_select_strategy != "full" or hf.projector_hidden_act != "gelu"
            or not hf.multimodal_projector_bias):
        raise ValueError("need vision_feature_select_strategy='full' and a biased gelu projector")
    return VideoLLMConfig(
        vision=_vision_config(hf.vision_config, hf.vision_feature_layer),
        # tie_word_embeddings: LlavaOnevisionConfig already ORs the top-level and text flags.
        text=_text_config(hf.text_config, tie=hf.tie_word_embeddings),
        pool_mode="bilinear", newline="one_token",  # what LlavaOnevision does for video
        image_token_index=hf.image_token_index, video_token_index=hf.video_token_index)


def _lmms_lab(d: dict, tc, base_dir: Optional[str]) -> VideoLLMConfig:
    vc = _lmms_vision(d, base_dir)
    pool = d.get("mm_spatial_pool_mode", "bilinear")
    newline = d.get("mm_newline_position", "one_token")
    if (d.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu"
            or pool not in ("bilinear", "average") or d.get("mm_spatial_pool_stride", 2) != 2
            or newline not in NEWLINE_LAYOUTS
            or d.get("mm_hidden_size", vc.hidden_size) != vc.hidden_size):
        raise ValueError("unsupported lmms-lab config: need mm_projector_type mlp2x_gelu, "
                         "mm_spatial_pool_mode bilinear/average with stride 2, "
                         f"mm_newline_position in {NEWLINE_LAYOUTS} and mm_hidden_size equal "
                         "to the tower's hidden size")
    defaults = VideoLLMConfig()
    return VideoLLMConfig(
        vision=_vision_config(vc, d.get("mm_vision_select_layer", -2)),
        text=_text_config(tc, tie=tc.tie_word_embeddings), pool_mode=pool, newline=newline,
        num_frames=int(d.get("frames_upbound") or defaults.num_frames),
        image_token_index=d.get("image_token_index", defaults.image_token_index),
        video_token_index=d.get("video_token_index", defaults.video_token_index))


def config_from_hf(d: dict, base_dir: Optional[str] = None) -> VideoLLMConfig:
    """VideoLLMConfig from a config.json dict (see the module docstring). `base_dir`: the
    checkpoint folder, where a relative lmms-lab mm_vision_tower folder is looked up."""
    from transformers import LlamaConfig, Qwen2Config

    if "leanpo_jax" in d:
        return _config_from_leanpo(d["leanpo_jax"])
    if "text_config" in d or d.get("model_type") == "llava_onevision":
        return _llava_hf(d)
    kind = (" ".join(d.get("architectures") or []) + " " + str(d.get("model_type"))).lower()
    cls = LlamaConfig if "llama" in kind else Qwen2Config
    if any(k.startswith("mm_") for k in d):
        tc = cls.from_dict({k: v for k, v in d.items() if k != "model_type"})
        return _lmms_lab(d, tc, base_dir)
    if d.get("model_type") not in ("qwen2", "llama"):
        raise ValueError(f"model_type {d.get('model_type')!r} {_UNSUPPORTED}")
    tc = cls.from_dict(d)
    return VideoLLMConfig(vision=None, text=_text_config(tc, tie=tc.tie_word_embeddings))


def _leanpo_dict(config: VideoLLMConfig) -> dict:
    d = dataclasses.asdict(config)
    return {"version": 1, "family": FAMILY_NAME, **{k: v for k, v in d.items() if k not in RUNTIME_FIELDS}}


def _config_from_leanpo(d: dict) -> VideoLLMConfig:
    d = {k: v for k, v in d.items() if k not in ("version", "family")}
    v = d.pop("vision")
    # JSON turns the mean/std tuples into lists; the frozen dataclass compares tuples.
    vision = None if v is None else VisionConfig(
        **{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})
    return VideoLLMConfig(vision=vision, text=TextConfig(**d.pop("text")), **d)


def hf_config_dict(config: VideoLLMConfig, *, extra_vision_layers: int = 0,
                   vision_head: bool = False) -> dict:
    """config.json for `config` + our "leanpo_jax" dict. `extra_vision_layers` SigLIP layers
    past the used ones and a `vision_head` (kept in hf_extra) are declared so that
    transformers loads them too: the feature layer then becomes -1 - extra_vision_layers."""
    from transformers import LlamaConfig, LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    t = config.text
    kw = hf_text_kwargs(t)
    # Qwen2 is Llama plus q/k/v biases; Llama's attention_bias would also add an o_proj bias.
    text = (Qwen2Config(**kw) if t.attention_bias
            else LlamaConfig(attention_bias=False, mlp_bias=False, **kw))
    if config.vision is None:
        text.architectures = ["Qwen2ForCausalLM" if t.attention_bias else "LlamaForCausalLM"]
        out = text.to_dict()
    else:
        v = config.vision
        vision = SiglipVisionConfig(
            hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
            num_hidden_layers=v.num_layers + extra_vision_layers, num_attention_heads=v.num_heads,
            num_channels=v.num_channels, image_size=v.image_size, patch_size=v.patch_size,
            layer_norm_eps=v.layer_norm_eps, vision_use_head=vision_head)
        out = LlavaOnevisionConfig(
            text_config=text, vision_config=vision, image_token_index=config.image_token_index,
            video_token_index=config.video_token_index,
            vision_feature_layer=-1 - extra_vision_layers, vision_feature_select_strategy="full",
            tie_word_embeddings=t.tie_word_embeddings,
            architectures=["LlavaOnevisionForConditionalGeneration"]).to_dict()
    out["dtype"] = config.param_dtype
    out["leanpo_jax"] = _leanpo_dict(config)
    return out


def transformers_equivalent(config: VideoLLMConfig) -> Tuple[str, dict]:
    """(transformers model class name, config.json dict without "leanpo_jax" / "dtype") of the
    HF model that computes what `config` computes; ValueError (why) when none does."""
    if config.vision is not None and (config.newline != "one_token" or config.pool_mode != "bilinear"):
        raise ValueError("transformers' LlavaOnevision video path has one newline token per video and "
                         f"bilinear pooling; this config uses newline={config.newline!r}, "
                         f"pool_mode={config.pool_mode!r}")
    d = hf_config_dict(config)
    d.pop("leanpo_jax", None)
    d.pop("dtype", None)
    # hf_config_dict names the class: Qwen2ForCausalLM / LlamaForCausalLM text-only, else
    # LlavaOnevisionForConditionalGeneration.
    return d["architectures"][0], d
