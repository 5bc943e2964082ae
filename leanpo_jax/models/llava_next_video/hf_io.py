"""HF checkpoints <-> NextVideoLLM (llava-hf, transformers 5 in-memory and lmms-lab namings).

    model = load_hf("folder")                      # config.json + safetensors (sharded or not)
    model = load_hf("w.safetensors", config=cfg)   # a bare file needs config=
    save_hf(model, "out")                          # llava-hf hub names + config.json + processors

Namings (models/llava_naming.py), all renamed to the llava-hf hub names: hub files
(vision_tower.vision_model.*, multi_modal_projector.linear_{1,2}.*, image_newline,
language_model.model.*, language_model.lm_head.weight), transformers 5 in-memory names
(model.vision_tower.* without vision_model., model.language_model.*, lm_head.weight) and the
original lmms-lab files (model.mm_projector.{0,2}.*, model.vision_tower.vision_tower.vision_model.*).
Known tensors the forward does not use (CLIP layers past the feature layer, position_ids /
inv_freq buffers) go to `model.hf_extra` and save_hf writes them back; any other tensor, and
any missing one, is an error naming it. Dtypes: stored ones kept unless `dtype=` is given.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax.models.hf_tables import (
    cast_floating, check_all_loaded, component_entries, export_arrays, export_specs, load_entries,
    read_config_json, text_entries, with_embedding_rows,
)
from leanpo_jax.models.llava_naming import (
    BUFFER, LM_HEAD, LM_PREFIX, VISION_PREFIX, canonical_names, detect_naming, extra_vision_layers,
    mismatch_error, unused_vision_layer,
)
from leanpo_jax.models.llava_next_video import preprocessor
from leanpo_jax.models.llava_next_video.clip import clip_hf_table
from leanpo_jax.models.llava_next_video.config import NextVideoConfig
from leanpo_jax.models.llava_onevision.connector import connector_hf_table
from leanpo_jax.models.llava_next_video.hf_config import config_from_hf, hf_config_dict
from leanpo_jax.models.llava_next_video.model import NextVideoLLM
from leanpo_jax.models.safetensors_io import (
    DEFAULT_MAX_SHARD_BYTES, open_checkpoint, remove_weight_files, write_checkpoint,
)


def _table(config: NextVideoConfig) -> list:
    """Every parameter of the model as canonical HF tensors (hf_tables.ModelEntry)."""
    return (text_entries(config.text, prefix=LM_PREFIX, lm_head_key=LM_HEAD)
            + component_entries(("vision_tower",), clip_hf_table(config, VISION_PREFIX))
            + component_entries(("connector",), connector_hf_table(config, "")))


def _names(ckpt, path: str) -> tuple:
    naming = detect_naming(ckpt, path)
    if naming == "causal-lm":
        raise ValueError(f"{path}: only language-model tensors (model.*, lm_head.*): not a "
                         "LLaVA-NeXT-Video checkpoint (no vision tower or projector)")
    return naming, canonical_names(ckpt, naming, False, path)


def checkpoint_config(path: str, config_json: Optional[dict] = None, ckpt=None) -> NextVideoConfig:
    """The config of the HF folder `path`: config.json, its preprocessor configs' frame
    statistics, vocab_size from the embedding's rows (safetensors headers only)."""
    config_json = read_config_json(path, "NextVideoConfig") if config_json is None else config_json
    config = preprocessor.with_frame_settings(config_from_hf(config_json, base_dir=path), path)
    ckpt = open_checkpoint(path) if ckpt is None else ckpt
    return with_embedding_rows(config, ckpt, _names(ckpt, path)[1].get(LM_PREFIX + "embed_tokens.weight"))


def _is_known_extra(name: str, config: NextVideoConfig) -> bool:
    return bool(BUFFER.search(name)) or unused_vision_layer(name, config.vision.num_layers)


def load_hf(path, *, config: Optional[NextVideoConfig] = None, dtype=None) -> NextVideoLLM:
    """A NextVideoLLM from an HF folder or a bare .safetensors file (needs config=); each tensor
    is read once and streamed into an abstractly built model (no random init)."""
    path = os.fspath(path)
    ckpt = open_checkpoint(path)
    naming, names = _names(ckpt, path)
    config = checkpoint_config(path, ckpt=ckpt) if config is None else config
    table = _table(config)
    needed = {e.name for e in table}
    extras = sorted(n for n in names if n not in needed and _is_known_extra(n, config))
    unknown = sorted(names[n] for n in names if n not in needed and n not in extras)
    missing = sorted(needed - set(names))
    if missing or unknown:
        raise mismatch_error(path, naming, missing, unknown, "LLaVA-NeXT-Video",
                             "check the layer counts and vision_feature_layer of config.json (or config= / "
                             "preset=), or re-export the checkpoint complete")
    target = None if dtype is None else np.dtype(jnp.dtype(dtype))
    dt = (target or np.dtype(ckpt.info(names[LM_PREFIX + "embed_tokens.weight"])[0])).name
    model = nnx.eval_shape(lambda: NextVideoLLM(config.replace(dtype=dt, param_dtype=dt), rngs=nnx.Rngs(0)))
    load_entries(model, table, lambda n: ckpt[names[n]], names.get, target=target, where=path)
    model.hf_extra.set_value({n: jnp.asarray(cast_floating(np.asarray(ckpt[names[n]]), target))
                              for n in extras})
    check_all_loaded(model, path)
    return model


def save_hf(model: NextVideoLLM, out_dir, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
            video_token: Optional[str] = None) -> str:
    """Writes every tensor (params in their dtype, hf_extra, post_layernorm) under llava-hf hub
    names + config.json + the preprocessor configs into out_dir -> out_dir. Old
    model*.safetensors / index files there are removed first."""
    out_dir = os.fspath(out_dir)
    config = model.config if video_token is None else model.config.replace(video_token=video_token)
    table = _table(config)
    extras = dict(model.hf_extra.get_value() or {})
    clash = sorted(set(extras) & {e.name for e in table})
    if clash:
        raise ValueError(f"hf_extra holds tensors that are also parameters: {clash}")
    os.makedirs(out_dir, exist_ok=True)
    remove_weight_files(out_dir)
    write_checkpoint(out_dir, export_specs(model, table, extras), export_arrays(model, table, extras),
                     max_shard_bytes=max_shard_bytes, metadata={"format": "pt"})
    hf = hf_config_dict(config, extra_vision_layers=extra_vision_layers(extras, config.vision.num_layers))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf, f, indent=2, sort_keys=True)
    preprocessor.write_preprocessor_configs(out_dir, config)
    return out_dir
