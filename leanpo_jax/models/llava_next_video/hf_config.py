"""config.json dicts <-> NextVideoConfig (parsed with transformers' config classes; no torch).

Read: ours (a "leanpo_jax" sub-dict with family "llava_next_video", written by
`hf_config_dict`; it wins), llava-hf `LlavaNextVideoConfig` (model_type "llava_next_video"),
and the original lmms-lab `LlavaLlamaForCausalLM` files (Llama keys at the top, mm_* keys,
mm_vision_tower naming a CLIP tower). CLIP layers run = num_hidden_layers + 1 + feature layer
when negative (-2 of 24 -> 23). Linear RoPE scaling is read from the text config's rope dict or, where a
conversion left it outside, from loose "type"/"factor" text-config keys (the llava-hf
conversion script) or the top-level `rope_scaling` / `rope_parameters`.
Pooling order: llava-hf pools before the projector (transformers); lmms-lab code projects first.
Write: LlavaNextVideoConfig `.to_dict()` + our dict.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from leanpo_jax.models.llava_next_video.config import (
    POOL_MODES, ClipVisionConfig, NextVideoConfig,
)
from leanpo_jax.models.family_config import RUNTIME_FIELDS, local_tower_config, vision_layers_run
from leanpo_jax.models.text_config import TextConfig, hf_text_kwargs, text_config_from_hf
from leanpo_jax.models.video_pooling import NEWLINE_LAYOUTS

FAMILY_NAME = "llava_next_video"
# openai/clip-vit-large-patch14-336, the tower lmms-lab configs name.
_CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                   num_attention_heads=16, image_size=336, patch_size=14, layer_norm_eps=1e-5)


def is_family_config(d: dict) -> bool:
    """True for the config.json dicts `config_from_hf` reads (module docstring)."""
    ours = d.get("leanpo_jax")
    if isinstance(ours, dict):
        return ours.get("family") == FAMILY_NAME
    if d.get("model_type") == "llava_next_video":
        return True
    tower = str(d.get("mm_vision_tower") or "")
    return any(k.startswith("mm_") for k in d) and "clip" in tower.lower()


def _vision(vc, feature_layer, strategy, where: str) -> ClipVisionConfig:
    if getattr(vc, "model_type", "clip_vision_model") not in ("clip_vision_model", "clip"):
        raise ValueError(f"{where}: vision model_type {vc.model_type!r} is not supported (CLIP only)")
    if strategy != "default":
        raise ValueError(f"{where}: vision_feature_select_strategy {strategy!r}: only 'default' "
                         "(CLS dropped) is supported")
    if getattr(vc, "hidden_act", "quick_gelu") != "quick_gelu":
        raise ValueError(f"{where}: CLIP hidden_act {vc.hidden_act!r}; only quick_gelu is supported")
    used = vision_layers_run(vc.num_hidden_layers, feature_layer, where)
    return ClipVisionConfig(image_size=vc.image_size, patch_size=vc.patch_size,
                            num_channels=vc.num_channels, hidden_size=vc.hidden_size,
                            intermediate_size=vc.intermediate_size, num_layers=used,
                            num_heads=vc.num_attention_heads, layer_norm_eps=vc.layer_norm_eps)


def _outer_rope(d: dict) -> Optional[dict]:
    """RoPE scaling written outside the text config's rope dict: the llava-hf conversion script
    updates the text config with loose {"type": "linear", "factor": 2.0} keys; others put
    rope_scaling / rope_parameters at the top level."""
    text = d.get("text_config") or {}
    if "type" in text or "rope_type" in text:
        return {k: text[k] for k in ("type", "rope_type", "factor") if k in text}
    return d.get("rope_scaling") or d.get("rope_parameters") or None


def _llava_hf(d: dict, where: str) -> NextVideoConfig:
    from transformers import LlavaNextVideoConfig

    hf = LlavaNextVideoConfig.from_dict(d)
    if hf.projector_hidden_act != "gelu" or not hf.multimodal_projector_bias:
        raise ValueError(f"{where}: need a biased gelu projector (projector_hidden_act 'gelu', "
                         "multimodal_projector_bias true)")
    if hf.spatial_pool_stride != 2 or hf.spatial_pool_mode not in ("average", "max"):
        raise ValueError(f"{where}: spatial_pool_mode {hf.spatial_pool_mode!r} / stride "
                         f"{hf.spatial_pool_stride}: supported are average or max with stride 2")
    text = text_config_from_hf(hf.text_config, tie=hf.tie_word_embeddings, outer_rope=_outer_rope(d),
                               where=where)
    return NextVideoConfig(
        vision=_vision(hf.vision_config, hf.vision_feature_layer, hf.vision_feature_select_strategy, where),
        text=text, pool_mode=hf.spatial_pool_mode, pool_before_projector=True, newline="no_token",
        image_token_index=hf.image_token_index, video_token_index=hf.video_token_index)


def _lmms_vision(d: dict, base_dir: Optional[str], where: str):
    from transformers import CLIPVisionConfig

    tower = str(d.get("mm_vision_tower") or "")
    local = local_tower_config(tower, base_dir)
    if local is not None:
        return CLIPVisionConfig.from_dict(local)
    if "clip-vit-large-patch14-336" in tower:
        return CLIPVisionConfig(**_CLIP_L_336)
    raise ValueError(f"{where}: cannot tell the vision tower's shape from mm_vision_tower={tower!r}: "
                     "give a local folder holding its config.json, or pass config= / preset=")


def _lmms_lab(d: dict, base_dir: Optional[str], where: str) -> NextVideoConfig:
    from transformers import LlamaConfig

    vc = _lmms_vision(d, base_dir, where)
    pool = d.get("mm_spatial_pool_mode", "average")
    merge = str(d.get("mm_patch_merge_type", "flat"))
    # The LLaVA-NeXT code adds video newlines only for a spatial* merge type (default one_token).
    newline = d.get("mm_newline_position", "one_token") if merge.startswith("spatial") else "no_token"
    if (d.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu" or pool not in POOL_MODES
            or d.get("mm_spatial_pool_stride", 2) != 2 or newline not in NEWLINE_LAYOUTS
            or d.get("mm_hidden_size", vc.hidden_size) != vc.hidden_size):
        raise ValueError(f"{where}: unsupported lmms-lab config: need mm_projector_type mlp2x_gelu, "
                         f"mm_spatial_pool_mode in {POOL_MODES} with stride 2, mm_newline_position "
                         f"in {NEWLINE_LAYOUTS} and mm_hidden_size equal to the tower's hidden size")
    feature = d.get("mm_vision_select_feature", "patch")
    strategy = {"patch": "default"}.get(feature, feature)
    tc = LlamaConfig.from_dict({k: v for k, v in d.items() if k != "model_type"})
    defaults = NextVideoConfig()
    return NextVideoConfig(
        vision=_vision(vc, d.get("mm_vision_select_layer", -2), strategy, where),
        text=text_config_from_hf(tc, tie=tc.tie_word_embeddings, where=where),
        pool_mode=pool, pool_before_projector=False, newline=newline,
        num_frames=int(d.get("frames_upbound") or d.get("mm_num_frames") or defaults.num_frames),
        image_token_index=d.get("image_token_index", defaults.image_token_index),
        video_token_index=d.get("video_token_index", defaults.video_token_index))


def config_from_hf(d: dict, base_dir: Optional[str] = None) -> NextVideoConfig:
    """NextVideoConfig from a config.json dict (module docstring); `base_dir`: the checkpoint
    folder (errors name its config.json; a relative lmms-lab mm_vision_tower is looked up there)."""
    where = os.path.join(base_dir, "config.json") if base_dir else "config.json"
    if "leanpo_jax" in d:
        return _config_from_leanpo(d["leanpo_jax"])
    if d.get("model_type") == "llava_next_video":
        return _llava_hf(d, where)
    if any(k.startswith("mm_") for k in d):
        return _lmms_lab(d, base_dir, where)
    raise ValueError(f"{where}: model_type {d.get('model_type')!r} is not a LLaVA-NeXT-Video config")


def _leanpo_dict(config: NextVideoConfig) -> dict:
    d = dataclasses.asdict(config)
    return {"version": 1, "family": FAMILY_NAME, **{k: v for k, v in d.items() if k not in RUNTIME_FIELDS}}


def _config_from_leanpo(d: dict) -> NextVideoConfig:
    d = {k: v for k, v in d.items() if k not in ("version", "family")}
    v = d.pop("vision")
    # JSON turns the mean/std tuples into lists; the frozen dataclass compares tuples.
    vision = ClipVisionConfig(**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})
    return NextVideoConfig(vision=vision, text=TextConfig(**d.pop("text")), **d)


def hf_config_dict(config: NextVideoConfig, *, extra_vision_layers: int = 0) -> dict:
    """config.json for `config` + our "leanpo_jax" dict. `extra_vision_layers` CLIP layers past
    the used ones (kept in hf_extra) are declared so transformers loads them too: the feature
    layer becomes -1 - extra_vision_layers."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig

    t, v = config.text, config.vision
    if t.attention_bias:
        raise ValueError("LLaVA-NeXT-Video's decoder is Llama (no attention biases): "
                         "text.attention_bias must be False")
    text = LlamaConfig(attention_bias=False, mlp_bias=False, **hf_text_kwargs(t))
    vision = CLIPVisionConfig(
        hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_layers + extra_vision_layers, num_attention_heads=v.num_heads,
        num_channels=v.num_channels, image_size=v.image_size, patch_size=v.patch_size,
        layer_norm_eps=v.layer_norm_eps, hidden_act="quick_gelu",
        projection_dim=v.hidden_size)
    # transformers knows only average / max pooling for video; our dict keeps the rest exact.
    pool = config.pool_mode if config.pool_mode in ("average", "max") else "average"
    out = LlavaNextVideoConfig(
        text_config=text, vision_config=vision, image_token_index=config.image_token_index,
        video_token_index=config.video_token_index, vision_feature_layer=-1 - extra_vision_layers,
        vision_feature_select_strategy="default", spatial_pool_mode=pool, spatial_pool_stride=2,
        projector_hidden_act="gelu", multimodal_projector_bias=True,
        tie_word_embeddings=t.tie_word_embeddings,
        architectures=["LlavaNextVideoForConditionalGeneration"]).to_dict()
    out["dtype"] = config.param_dtype
    out["leanpo_jax"] = _leanpo_dict(config)
    return out


def matches_transformers(config: NextVideoConfig) -> str:
    """"" when transformers' LlavaNextVideo computes what `config` describes, else why not."""
    if not config.pool_before_projector:
        return "pool_before_projector=False (the LeanPO fork's order): transformers pools before the projector"
    if config.pool_mode not in ("average", "max"):
        return f"pool_mode={config.pool_mode!r}: transformers' video pooler has average / max only"
    if config.newline != "no_token":
        return f"newline={config.newline!r}: transformers adds no newline tokens to videos"
    return ""
