"""Tables mapping HF checkpoint tensors to parameter paths, with the array transforms.

An `HFTensor` names one checkpoint tensor, the Param it fills (a path of attribute names), its
index on a stacked `layers` axis, and the two transforms between the layouts (torch Linear
weight [out, in] <-> kernel [in, out], optional head splits). Loading and exporting walk a table.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True)
class HFTensor:
    """One HF tensor: its key, the Param path, the index on the `layers` axis (None: not
    stacked) and the two array transforms (HF layout <-> our layout, one layer's slice)."""

    hf_key: str
    path: tuple
    layer: Optional[int]
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def identity(a):
    return a


def linear_entries(hf_prefix: str, path: tuple, layer=None, *, out_shape=None, in_shape=None):
    """Entries for a torch Linear `weight [out, in]` / `bias [out]` pair: kernel = weight.T,
    optionally with the in or out dim split (e.g. [D, H*hd] -> [D, H, hd])."""
    def w_to(a):
        k = a.T
        if out_shape is not None:
            k = k.reshape(k.shape[:1] + tuple(out_shape))
        if in_shape is not None:
            k = k.reshape(tuple(in_shape) + k.shape[-1:])
        return k

    def w_from(k):
        k = k.reshape(-1, k.shape[-1]) if in_shape is not None else k
        k = k.reshape(k.shape[0], -1) if out_shape is not None else k
        return k.T

    def b_to(a):
        return a.reshape(out_shape) if out_shape is not None else a

    def b_from(b):
        return b.reshape(-1)

    return [HFTensor(hf_prefix + ".weight", path + ("kernel",), layer, w_to, w_from),
            HFTensor(hf_prefix + ".bias", path + ("bias",), layer, b_to, b_from)]


def norm_entries(hf_prefix: str, path: tuple, layer=None):
    return [HFTensor(hf_prefix + ".weight", path + ("scale",), layer, identity, identity),
            HFTensor(hf_prefix + ".bias", path + ("bias",), layer, identity, identity)]


def get_param(module: nnx.Module, path: tuple) -> nnx.Variable:
    obj = module
    for name in path:
        obj = getattr(obj, name)
    return obj


def load_hf_tensors(module: nnx.Module, table: list, state_dict) -> None:
    """Writes `state_dict[entry.hf_key]` (numpy-like) into the module for every table entry.

    Values are cast to each Param's dtype and keep its current sharding. Keys of the state
    dict that the table does not name are ignored (e.g. a 27th SigLIP layer or the head).
    """
    missing = [e.hf_key for e in table if e.hf_key not in state_dict]
    if missing:
        raise KeyError(f"{len(missing)} tensors missing from the state dict, e.g. {missing[:3]}")
    stacks: dict = {}
    for e in table:
        arr = np.asarray(e.to_flax(np.asarray(state_dict[e.hf_key])))
        if e.layer is None:
            _assign(module, e.path, arr)
        else:
            stacks.setdefault(e.path, {})[e.layer] = arr
    for path, per_layer in stacks.items():
        _assign(module, path, np.stack([per_layer[i] for i in sorted(per_layer)]))


def _assign(module: nnx.Module, path: tuple, arr: np.ndarray) -> None:
    var = get_param(module, path)
    old = var.get_value()
    if tuple(arr.shape) != tuple(old.shape):
        raise ValueError(f"{'.'.join(path)}: checkpoint shape {arr.shape} != {old.shape}")
    new = jnp.asarray(arr, dtype=old.dtype)
    if isinstance(old, jax.Array) and not isinstance(old, jax.core.Tracer):
        new = jax.device_put(new, old.sharding)
    var.set_value(new)


def export_hf_tensors(module: nnx.Module, table: list, dtype=None) -> dict:
    """The inverse of `load_hf_tensors`: {hf_key: contiguous numpy array in HF layout}."""
    cache: dict = {}
    out = {}
    for e in table:
        if e.path not in cache:
            cache[e.path] = np.asarray(jax.device_get(get_param(module, e.path).get_value()))
        arr = cache[e.path] if e.layer is None else cache[e.path][e.layer]
        arr = e.to_hf(arr)
        out[e.hf_key] = np.ascontiguousarray(arr if dtype is None else arr.astype(dtype))
    return out
