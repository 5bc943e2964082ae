"""HF checkpoints <-> QwenVLModel (hub / transformers 4.x and transformers 5 in-memory namings).

    model = load_hf("folder")                      # config.json + safetensors (sharded or not)
    save_hf(model, "out")                          # hub names + config.json + processor configs

Namings, renamed to the hub names: hub / 4.x files (`visual.*`, `model.embed_tokens`,
`model.layers.*`, `model.norm`, `lm_head.weight`) and transformers 5 in-memory names
(`model.visual.*`, `model.language_model.*`, `lm_head.weight`). A tied model's lm_head equal
to its embeddings and rotary inv_freq buffers go to `model.hf_extra` (written back); any other
tensor, and any missing one, is an error naming it. Dtypes: stored ones kept unless `dtype=`.
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
    read_config_json, text_entries, tied_head_extra, with_embedding_rows,
)
from leanpo_jax.models.llava_naming import BUFFER, mismatch_error, rename_keys
from leanpo_jax.models.qwen_vl import preprocessor
from leanpo_jax.models.qwen_vl.config import QwenVLConfig
from leanpo_jax.models.qwen_vl.hf_config import config_from_hf, hf_config_dict
from leanpo_jax.models.qwen_vl.model import QwenVLModel
from leanpo_jax.models.qwen_vl.vision import qwen_vision_hf_table
from leanpo_jax.models.safetensors_io import (
    DEFAULT_MAX_SHARD_BYTES, open_checkpoint, remove_weight_files, write_checkpoint,
)

_LM, _HEAD, _VISUAL = "model.", "lm_head.weight", "visual."
_RULES = {"transformers": [(r"^model\.visual\.", _VISUAL), (r"^model\.language_model\.", _LM)], "hub": []}


def detect_naming(keys, where: str = "checkpoint") -> str:
    keys = list(keys)
    if any(k.startswith(("model.language_model.", "model.visual.")) for k in keys):
        return "transformers"
    if any(k.startswith(_VISUAL) for k in keys) and any(k.startswith("model.layers.") for k in keys):
        return "hub"
    raise ValueError(f"{where}: cannot tell the naming from its tensor names (e.g. {sorted(keys)[:5]}); "
                     "expected Qwen-VL hub names (visual.*, model.layers.*) or transformers 5 names "
                     "(model.visual.*, model.language_model.*)")


def canonical_names(keys, naming: str, where: str = "checkpoint") -> dict:
    """{hub name: name in the file} for every key."""
    return rename_keys(keys, _RULES[naming], where)


def _table(config: QwenVLConfig) -> list:
    return (text_entries(config.text, prefix=_LM, lm_head_key=_HEAD)
            + component_entries(("vision_tower",), qwen_vision_hf_table(config, _VISUAL)))


def checkpoint_config(path: str, config_json: Optional[dict] = None, ckpt=None) -> QwenVLConfig:
    """The config of the HF folder `path`: config.json, its processor configs' statistics and
    vocab_size from the embedding's rows (safetensors headers only)."""
    config_json = read_config_json(path, "QwenVLConfig") if config_json is None else config_json
    config = preprocessor.with_frame_settings(config_from_hf(config_json, base_dir=path), path)
    ckpt = open_checkpoint(path) if ckpt is None else ckpt
    emb = canonical_names(ckpt, detect_naming(ckpt, path), path).get(_LM + "embed_tokens.weight")
    return with_embedding_rows(config, ckpt, emb)


def load_hf(path, *, config: Optional[QwenVLConfig] = None, dtype=None) -> QwenVLModel:
    """A QwenVLModel from an HF folder or a bare .safetensors file (needs config=)."""
    path = os.fspath(path)
    ckpt = open_checkpoint(path)
    naming = detect_naming(ckpt, path)
    names = canonical_names(ckpt, naming, path)
    config = checkpoint_config(path, ckpt=ckpt) if config is None else config
    table = _table(config)
    needed = {e.name for e in table}
    tied_head = _HEAD if config.text.tie_word_embeddings and _HEAD in names else None
    extras = sorted(n for n in names if n not in needed and BUFFER.search(n))
    unknown = sorted(names[n] for n in names if n not in needed and n not in extras and n != tied_head)
    missing = sorted(needed - set(names))
    if missing or unknown:
        raise mismatch_error(path, naming, missing, unknown, "Qwen-VL",
                             "check the layer counts, tie_word_embeddings and the vision version of the "
                             "config (config.json, config= or preset=)")
    target = None if dtype is None else np.dtype(jnp.dtype(dtype))
    dt = (target or np.dtype(ckpt.info(names[_LM + "embed_tokens.weight"])[0])).name
    model = nnx.eval_shape(lambda: QwenVLModel(config.replace(dtype=dt, param_dtype=dt), rngs=nnx.Rngs(0)))
    load_entries(model, table, lambda n: ckpt[names[n]], names.get, target=target, where=path)
    values = {n: jnp.asarray(cast_floating(np.asarray(ckpt[names[n]]), target)) for n in extras}
    if tied_head is not None:
        value = cast_floating(np.asarray(ckpt[names[tied_head]]), target)
        values[tied_head] = tied_head_extra(model, value, names[tied_head], path)
    model.hf_extra.set_value(dict(sorted(values.items())))
    check_all_loaded(model, path)
    return model


def save_hf(model: QwenVLModel, out_dir, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
            video_token: Optional[str] = None) -> str:
    """Writes every tensor under hub names + config.json + the processor configs -> out_dir."""
    out_dir = os.fspath(out_dir)
    config = model.config if video_token is None else model.config.replace(video_token=video_token)
    table = _table(config)
    extras = dict(model.hf_extra.get_value() or {})
    os.makedirs(out_dir, exist_ok=True)
    remove_weight_files(out_dir)
    write_checkpoint(out_dir, export_specs(model, table, extras), export_arrays(model, table, extras),
                     max_shard_bytes=max_shard_bytes, metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config_dict(config), f, indent=2, sort_keys=True)
    preprocessor.write_preprocessor_configs(out_dir, config)
    return out_dir
