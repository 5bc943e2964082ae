"""HF state dicts of the Qwen2 / Llama decoder (models/qwen2.py's table of names and transforms).

    used = load_hf_state_dict(model, state_dict, prefix="model.")   # numpy arrays in, stacked per layer
    state_dict = export_hf_state_dict(model, prefix="model.")        # and out, unstacked

Linear weights [out, in] are transposed to [in, out] with the head axis split out; biases
[N*hd] -> [N, hd]; per-layer tensors are stacked on the leading layers axis.
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
import numpy as np

from leanpo_jax.models.qwen2 import _LAYER_PARAMS, Qwen2, layer_param_shapes
from leanpo_jax.models.text_config import TextConfig


def hf_names(config: TextConfig, *, prefix: str = "model.",
             lm_head_key: Optional[str] = "lm_head.weight") -> dict:
    """Param path tuple -> (HF key, or list of per-layer keys, transform kind)."""
    names = {("embed_tokens",): (f"{prefix}embed_tokens.weight", "as_is"),
             ("final_norm",): (f"{prefix}norm.weight", "as_is")}
    for name in layer_param_shapes(config):
        hf, kind = _LAYER_PARAMS[name][1:]
        names[("layers", name)] = (
            [f"{prefix}layers.{i}.{hf}" for i in range(config.num_layers)], kind)
    if not config.tie_word_embeddings:
        names[("lm_head",)] = (lm_head_key, "kernel")
    return names


def hf_to_flax(kind: str, array: np.ndarray, shape) -> np.ndarray:
    """One HF tensor -> one (unstacked) Flax param of `shape`: linear weights [out, in] are
    transposed to [in, out] and the head axis split out; biases [N*hd] -> [N, hd]."""
    array = np.asarray(array)
    return (array if kind in ("as_is", "vector") else array.T).reshape(shape)


def flax_to_hf(kind: str, array: np.ndarray) -> np.ndarray:
    """Inverse of hf_to_flax: kernel [D, N, hd] -> [N*hd, D]; kernel_out [N, hd, D] -> [D, N*hd]."""
    array = np.asarray(array)
    if kind == "as_is":
        return array
    if kind == "vector":
        return array.reshape(-1)
    if kind == "kernel_out":
        return array.reshape(-1, array.shape[-1]).T
    return array.reshape(array.shape[0], -1).T


def _variable(model: Qwen2, path):
    node = model
    for name in path:
        node = getattr(node, name)
    return node


def load_hf_state_dict(model: Qwen2, state_dict, *, prefix: str = "model.",
                       lm_head_key: Optional[str] = "lm_head.weight") -> set:
    """Copies an HF Qwen2/Llama state dict (name -> numpy array) into `model`, stacking the
    per-layer tensors; casts to each Param's dtype. Returns the set of HF keys consumed (with a
    tied head, lm_head.weight is not needed and not consumed)."""
    used, missing = set(), []
    names = hf_names(model.config, prefix=prefix, lm_head_key=lm_head_key)
    for path, (keys, kind) in names.items():
        var = _variable(model, path)
        key_list = keys if isinstance(keys, list) else [keys]
        missing += [k for k in key_list if k not in state_dict]
        if any(k not in state_dict for k in key_list):
            continue
        shape = var.shape[1:] if isinstance(keys, list) else var.shape
        parts = [hf_to_flax(kind, np.asarray(state_dict[k]), shape) for k in key_list]
        value = np.stack(parts) if isinstance(keys, list) else parts[0]
        var[...] = jnp.asarray(value, dtype=var.dtype)
        used.update(key_list)
    if missing:
        raise KeyError(f"state dict lacks {len(missing)} tensors, e.g. {missing[:5]}")
    return used


def export_hf_state_dict(model: Qwen2, *, prefix: str = "model.",
                         lm_head_key: Optional[str] = "lm_head.weight") -> dict:
    """The model's parameters as an HF state dict of numpy arrays (per-layer tensors unstacked);
    a tied head writes no lm_head tensor, as HF's save_pretrained does."""
    out = {}
    names = hf_names(model.config, prefix=prefix, lm_head_key=lm_head_key)
    for path, (keys, kind) in names.items():
        value = np.asarray(_variable(model, path)[...])
        if isinstance(keys, list):
            out.update({k: flax_to_hf(kind, value[i]) for i, k in enumerate(keys)})
        else:
            out[keys] = flax_to_hf(kind, value)
    return out
