"""HF checkpoints <-> VideoLLM: LLaVA-OneVision / LLaVA-Video (llava-hf or lmms-lab), Qwen2, Llama.

    model = load_hf("folder")                                # config.json + safetensors
    model = load_hf("w.safetensors", config=cfg)             # a bare file needs config=
    save_hf(model, "out")    # llava-hf hub names + config.json + preprocessor configs

Namings, detected from the tensor keys (docs/model_facts.md §9), all renamed to one canonical form (the
llava-hf hub names; plain causal-LM names when the config is text-only):
  llava-hf      language_model.model.*, language_model.lm_head.weight, multi_modal_projector.*,
                image_newline, vision_tower.vision_model.* (hub) or vision_tower.* (the form
                transformers 5 save_pretrained writes)
  transformers  model.language_model.*, model.vision_tower.*, model.multi_modal_projector.*,
                model.image_newline, lm_head.weight (the in-memory state-dict names)
  lmms-lab      model.{embed_tokens,layers,norm}.*, model.mm_projector.{0,2}.*,
                model.vision_tower.vision_tower.vision_model.*, model.image_newline, lm_head.*
  causal-lm     model.* and lm_head.weight only (Qwen2 / Llama): a text-only model
Decisions. Known tensors the forward does not use (SigLIP layers past the feature layer, the
SigLIP head, position_ids / rotary inv_freq buffers, a tied model's lm_head equal to its
embeddings) go to `model.hf_extra` under canonical names and save_hf writes them back. Any other
tensor is an error naming it: a config that does not match its weights must not load silently.
Dtypes: each parameter keeps its stored dtype and config.dtype = param_dtype = the embedding's
stored dtype, unless `dtype=` is given (then every float tensor, extras too, is cast to it).
The config comes from config.json (hf_config.py; `config=` / `preset=` replace it), with
vocab_size taken from the embedding's rows. A config.json we wrote carries a "leanpo_jax" dict
(the whole VideoLLMConfig, e.g. pool/newline layouts transformers' class lacks) that wins.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Optional

import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax.models.llava_onevision import preprocessor
from leanpo_jax.models.llava_onevision.config import VideoLLMConfig
from leanpo_jax.models.llava_onevision.connector import connector_hf_table
from leanpo_jax.models.llava_onevision.hf_config import config_from_hf, hf_config_dict
from leanpo_jax.models.llava_onevision.model import VideoLLM
from leanpo_jax.models.llava_onevision.siglip import siglip_hf_table
from leanpo_jax.models.hf_tables import (
    cast_floating, check_all_loaded, component_entries, export_arrays, export_specs, load_entries,
    read_config_json, text_entries, tied_head_extra, with_embedding_rows,
)
from leanpo_jax.models.llava_naming import (  # noqa: F401  (detect_naming: module API)
    BUFFER, canonical_names, detect_naming, extra_vision_layers, mismatch_error, unused_vision_layer,
)
from leanpo_jax.models.safetensors_io import (
    DEFAULT_MAX_SHARD_BYTES, open_checkpoint, remove_weight_files, write_checkpoint,
)

_LM, _LM_HEAD = "language_model.model.", "language_model.lm_head.weight"
_VT, _TEXT_HEAD = "vision_tower.vision_model.", "lm_head.weight"



def _is_known_extra(name: str, config: VideoLLMConfig) -> bool:
    if BUFFER.search(name):
        return True
    if config.vision is None:
        return False
    return unused_vision_layer(name, config.vision.num_layers) or name.startswith(_VT + "head.")


# ----------------------------------------------------------------------------- parameter table
def _table(config: VideoLLMConfig) -> list:
    """Every parameter of the model as canonical HF tensors (hf_tables.ModelEntry)."""
    text_only = config.vision is None
    out = text_entries(config.text, prefix="model." if text_only else _LM,
                       lm_head_key=_TEXT_HEAD if text_only else _LM_HEAD)
    if not text_only:
        out += component_entries(("vision_tower",), siglip_hf_table(config, _VT))
        out += component_entries(("connector",), connector_hf_table(config, ""))
    return out


# --------------------------------------------------------------------------------------- load
def checkpoint_config(path: str, config_json: Optional[dict] = None, ckpt=None) -> VideoLLMConfig:
    """The config of the HF folder `path`: config.json (hf_config.py), the frame statistics of
    its preprocessor configs (preprocessor.py) and vocab_size from the embedding's rows (the
    weights are not read, only the safetensors headers)."""
    cfg_file = os.path.join(path, "config.json")
    config_json = read_config_json(path, "VideoLLMConfig") if config_json is None else config_json
    config = _with_frame_settings(config_from_hf(config_json, base_dir=path), path, cfg_file)
    ckpt = open_checkpoint(path) if ckpt is None else ckpt
    naming = detect_naming(ckpt, path)
    text_only = config.vision is None
    emb = canonical_names(ckpt, naming, text_only, path).get(
        ("model." if text_only else _LM) + "embed_tokens.weight")
    return with_embedding_rows(config, ckpt, emb)


def _with_frame_settings(config: VideoLLMConfig, folder: str, cfg_file: str) -> VideoLLMConfig:
    """config with the mean/std of the folder's preprocessor config; a frame size or resize
    policy other than the tower's direct image_size resize is an error naming both files."""
    found = preprocessor.read_frame_settings(folder) if config.vision is not None else None
    if found is None:
        return config
    v = config.vision
    if (found["size"] not in (None, (v.image_size, v.image_size))
            or found["resize"] != "direct"):
        raise ValueError(
            f"{found['file']} resizes frames to {found['size']} ({found['resize']}) but {cfg_file} "
            f"describes a SigLIP tower that takes {v.image_size}x{v.image_size} frames (direct "
            "resize): the checkpoint's files disagree; fix the preprocessor config's size")
    stats = {k: found[k] for k in ("mean", "std") if found[k] is not None}
    if not stats:
        return config
    return config.replace(vision=dataclasses.replace(
        v, **{f"image_{k}": value for k, value in stats.items()}))


def _check_names(path, naming, names, table, config) -> tuple:
    """-> (extra canonical names, tied head name or None); raises naming every tensor that is
    missing or unknown."""
    needed = {e.name for e in table}
    head = _TEXT_HEAD if config.vision is None else _LM_HEAD
    tied_head = head if config.text.tie_word_embeddings and head in names else None
    extras = sorted(n for n in names if n not in needed and _is_known_extra(n, config))
    unknown = sorted(names[n] for n in names if n not in needed and n not in extras
                     and n != tied_head)
    missing = sorted(needed - set(names))
    if missing or unknown:
        raise mismatch_error(path, naming, missing, unknown, "model",
                             "check the layer counts, tie_word_embeddings and attention_bias of the config "
                             "(config.json, config= or preset=).")
    return extras, tied_head


def load_hf(path, *, config: Optional[VideoLLMConfig] = None, dtype=None) -> VideoLLM:
    """A VideoLLM from an HF folder (config.json + safetensors, sharded or not) or a bare
    .safetensors file (needs config=); `config` overrides the folder's (`checkpoint_config`).
    Each tensor is read once and streamed into an abstractly built model (no random init)."""
    path = os.fspath(path)
    ckpt = open_checkpoint(path)
    naming = detect_naming(ckpt, path)
    config = checkpoint_config(path, ckpt=ckpt) if config is None else config
    names = canonical_names(ckpt, naming, config.vision is None, path)
    table = _table(config)
    extras, tied_head = _check_names(path, naming, names, table, config)
    target = None if dtype is None else np.dtype(jnp.dtype(dtype))
    emb_name = next(e.name for e in table if e.path == ("language_model", "embed_tokens"))
    dt = (target or np.dtype(ckpt.info(names[emb_name])[0])).name
    model = nnx.eval_shape(lambda: VideoLLM(config.replace(dtype=dt, param_dtype=dt), rngs=nnx.Rngs(0)))

    load_entries(model, table, lambda n: ckpt[names[n]], names.get, target=target, where=path)
    extra_values = {n: jnp.asarray(cast_floating(np.asarray(ckpt[names[n]]), target)) for n in extras}
    if tied_head is not None:
        value = cast_floating(np.asarray(ckpt[names[tied_head]]), target)
        extra_values[tied_head] = tied_head_extra(model, value, names[tied_head], path)
    model.hf_extra.set_value(dict(sorted(extra_values.items())))
    check_all_loaded(model, path)
    return model


# --------------------------------------------------------------------------------------- save
def save_hf(model: VideoLLM, out_dir, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
            video_token: Optional[str] = None) -> str:
    """Writes every tensor (params in their dtype, hf_extra, post_layernorm) under llava-hf hub
    names (plain causal-LM names when text-only) + config.json + the preprocessor configs into
    out_dir; returns out_dir. `video_token`: the placeholder's text in the tokenizer saved
    beside it (recorded in config.json). Old model*.safetensors / index files are removed first."""
    out_dir = os.fspath(out_dir)
    config = model.config if video_token is None else model.config.replace(video_token=video_token)
    table = _table(config)
    extras = dict(model.hf_extra.get_value() or {})
    clash = sorted(set(extras) & {e.name for e in table})
    if clash:
        raise ValueError(f"hf_extra holds tensors that are also parameters: {clash}")
    layouts = (config.pool_mode, config.newline)
    if config.vision is not None and layouts != ("bilinear", "one_token"):
        warnings.warn(f"pool_mode={layouts[0]!r} / newline={layouts[1]!r}: transformers' "
                      "LlavaOnevision class pools bilinearly with one newline token, so it will "
                      "embed videos differently; load_hf restores these settings exactly")
    specs = export_specs(model, table, extras)
    os.makedirs(out_dir, exist_ok=True)
    remove_weight_files(out_dir)
    write_checkpoint(out_dir, specs, export_arrays(model, table, extras), max_shard_bytes=max_shard_bytes,
                     metadata={"format": "pt"})
    used = 0 if config.vision is None else config.vision.num_layers
    hf = hf_config_dict(config, extra_vision_layers=extra_vision_layers(extras, used),
                        vision_head=any(n.startswith(_VT + "head.") for n in extras))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf, f, indent=2, sort_keys=True)
    if config.vision is not None:
        v = config.vision
        preprocessor.write_preprocessor_configs(out_dir, image_size=v.image_size, mean=v.image_mean,
                                                std=v.image_std)
    return out_dir
