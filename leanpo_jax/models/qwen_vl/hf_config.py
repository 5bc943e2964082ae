"""config.json dicts <-> QwenVLConfig (parsed with transformers' Qwen2VLConfig / Qwen2_5_VLConfig).

Read: ours (a "leanpo_jax" dict with family "qwen_vl", written by `hf_config_dict`; it wins),
the hub / transformers 4.x files (text fields at the top, `rope_scaling` {"type": "mrope",
"mrope_section": [...]}, `vision_config` with embed_dim / in_chans) and transformers 5.x
files (`text_config` with `rope_parameters`). transformers' classes read both forms.
A config without `mrope_section` is refused: the decoder's M-RoPE needs it.
The video bucket (num_frames, video_size) is not part of a checkpoint: a loaded config takes
the defaults (32 frames at 448 x 448) unless ours says otherwise; set them with replace().
Write: Qwen2VLConfig / Qwen2_5_VLConfig `.to_dict()` + our dict.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from leanpo_jax.models.family_config import RUNTIME_FIELDS
from leanpo_jax.models.qwen_vl.config import QwenVisionConfig, QwenVLConfig
from leanpo_jax.models.text_config import TextConfig, hf_text_kwargs, text_config_from_hf

FAMILY_NAME = "qwen_vl"
_MODEL_TYPES = {"qwen2_vl": "2", "qwen2_5_vl": "2.5"}
_CLASSES = {"2": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration"),
            "2.5": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration")}


def is_family_config(d: dict) -> bool:
    ours = d.get("leanpo_jax")
    if isinstance(ours, dict):
        return ours.get("family") == FAMILY_NAME
    return d.get("model_type") in _MODEL_TYPES


def _vision(vc, version: str, where: str) -> QwenVisionConfig:
    act = getattr(vc, "hidden_act", None)
    if version == "2":
        if act not in (None, "quick_gelu"):
            raise ValueError(f"{where}: Qwen2-VL vision hidden_act {act!r}; only quick_gelu is supported")
        return QwenVisionConfig(
            version="2", depth=vc.depth, hidden_size=vc.embed_dim, num_heads=vc.num_heads,
            mlp_ratio=float(vc.mlp_ratio), patch_size=vc.patch_size, temporal_patch_size=vc.temporal_patch_size,
            spatial_merge_size=vc.spatial_merge_size, in_channels=vc.in_channels, out_hidden_size=vc.hidden_size)
    if act not in (None, "silu"):
        raise ValueError(f"{where}: Qwen2.5-VL vision hidden_act {act!r}; only silu is supported")
    return QwenVisionConfig(
        version="2.5", depth=vc.depth, hidden_size=vc.hidden_size, num_heads=vc.num_heads,
        intermediate_size=vc.intermediate_size, patch_size=vc.patch_size,
        temporal_patch_size=vc.temporal_patch_size, spatial_merge_size=vc.spatial_merge_size,
        in_channels=vc.in_channels, window_size=vc.window_size,
        fullatt_block_indexes=tuple(int(i) for i in vc.fullatt_block_indexes), out_hidden_size=vc.out_hidden_size)


def config_from_hf(d: dict, base_dir: Optional[str] = None) -> QwenVLConfig:
    """QwenVLConfig from a config.json dict (module docstring)."""
    import transformers

    where = f"{base_dir}/config.json" if base_dir else "config.json"
    if "leanpo_jax" in d:
        return _config_from_leanpo(d["leanpo_jax"])
    version = _MODEL_TYPES.get(d.get("model_type"))
    if version is None:
        raise ValueError(f"{where}: model_type {d.get('model_type')!r} is not Qwen2-VL / Qwen2.5-VL")
    hf = getattr(transformers, _CLASSES[version][0]).from_dict(d)
    text = text_config_from_hf(hf.text_config, tie=bool(hf.tie_word_embeddings), where=where)
    if text.mrope_section is None:
        raise ValueError(f"{where}: the text config's rope parameters lack 'mrope_section' (e.g. "
                         "[16, 24, 24]); Qwen-VL's decoder needs it: fix rope_scaling / rope_parameters")
    if sum(text.mrope_section) * 2 != text.resolved_head_dim:
        raise ValueError(f"{where}: mrope_section {list(text.mrope_section)} does not cover head_dim "
                         f"{text.resolved_head_dim} (its sum must be head_dim / 2)")
    vision = _vision(hf.vision_config, version, where)
    defaults = {f.name: f.default for f in dataclasses.fields(QwenVLConfig)}
    tps = getattr(hf.vision_config, "tokens_per_second", defaults["tokens_per_second"])
    return QwenVLConfig(vision=vision, text=text, tokens_per_second=float(tps),
                        image_token_id=hf.image_token_id, video_token_id=hf.video_token_id,
                        vision_start_token_id=hf.vision_start_token_id,
                        vision_end_token_id=getattr(hf, "vision_end_token_id", defaults["vision_end_token_id"]))


def _leanpo_dict(config: QwenVLConfig) -> dict:
    d = dataclasses.asdict(config)
    return {"version": 1, "family": FAMILY_NAME, **{k: v for k, v in d.items() if k not in RUNTIME_FIELDS}}


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _config_from_leanpo(d: dict) -> QwenVLConfig:
    d = {k: v for k, v in d.items() if k not in ("version", "family")}
    vision = QwenVisionConfig(**_tuples(d.pop("vision")))
    text = TextConfig(**_tuples(d.pop("text")))
    return QwenVLConfig(vision=vision, text=text, **_tuples(d))


def _int_if_whole(x: float):
    """transformers' strict config fields want ints where our config keeps floats."""
    return int(x) if float(x).is_integer() else x


def transformers_dict(config: QwenVLConfig) -> dict:
    """The transformers config.json dict of `config` (5.x layout, model_type set)."""
    import transformers

    v, t = config.vision, config.text
    text = dict(hf_text_kwargs(t), max_window_layers=t.num_layers, use_sliding_window=False)
    if v.version == "2":
        vision = dict(depth=v.depth, embed_dim=v.hidden_size, hidden_size=v.out_hidden_size,
                      mlp_ratio=_int_if_whole(v.mlp_ratio), num_heads=v.num_heads, in_channels=v.in_channels,
                      patch_size=v.patch_size, spatial_merge_size=v.spatial_merge_size,
                      temporal_patch_size=v.temporal_patch_size, hidden_act="quick_gelu")
    else:
        vision = dict(depth=v.depth, hidden_size=v.hidden_size, out_hidden_size=v.out_hidden_size,
                      intermediate_size=v.intermediate_size, num_heads=v.num_heads, in_channels=v.in_channels,
                      patch_size=v.patch_size, spatial_merge_size=v.spatial_merge_size,
                      temporal_patch_size=v.temporal_patch_size, window_size=v.window_size,
                      fullatt_block_indexes=list(v.fullatt_block_indexes),
                      tokens_per_second=_int_if_whole(config.tokens_per_second), hidden_act="silu")
    cls_name, arch = _CLASSES[v.version]
    return getattr(transformers, cls_name)(
        text_config=text, vision_config=vision, image_token_id=config.image_token_id,
        video_token_id=config.video_token_id, vision_start_token_id=config.vision_start_token_id,
        vision_end_token_id=config.vision_end_token_id, tie_word_embeddings=t.tie_word_embeddings,
        architectures=[arch]).to_dict()


def hf_config_dict(config: QwenVLConfig) -> dict:
    """config.json for `config`: transformers' dict + our "leanpo_jax" dict (the bucket etc.)."""
    out = transformers_dict(config)
    out["dtype"] = config.param_dtype
    out["leanpo_jax"] = _leanpo_dict(config)
    return out
