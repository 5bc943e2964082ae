"""Tables mapping HF checkpoint tensors to parameter paths, with the array transforms.

An `HFTensor` names one checkpoint tensor, the Param it fills (a path of attribute names), its
index on a stacked `layers` axis, and the two transforms between the layouts (torch Linear
weight [out, in] <-> kernel [in, out], optional head splits). Loading and exporting walk a table.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax.models.qwen2_hf import flax_to_hf, hf_names, hf_to_flax


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


# ------------------------------------------------------------------------ whole-model tables
@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One checkpoint tensor of a whole model: the Param path from the model root, its index on
    a stacked `layers` axis (None: not stacked), its canonical HF name and the transforms
    (to_flax(hf array, one slice's shape) -> our layout; to_hf(our slice) -> HF layout)."""

    path: tuple
    layer: Optional[int]
    name: str
    to_flax: Callable
    to_hf: Callable


def text_entries(text_config, *, prefix: str, lm_head_key: str, root: tuple = ("language_model",)) -> list:
    """ModelEntries of a Qwen2 / Llama decoder under `root` (HF names from `qwen2_hf.hf_names`)."""
    out = []
    for path, (keys, kind) in hf_names(text_config, prefix=prefix, lm_head_key=lm_head_key).items():
        to_flax, to_hf = functools.partial(hf_to_flax, kind), functools.partial(flax_to_hf, kind)
        pairs = enumerate(keys) if isinstance(keys, list) else [(None, keys)]
        out += [ModelEntry(root + path, i, k, to_flax, to_hf) for i, k in pairs]
    return out


def component_entries(root: tuple, table: list) -> list:
    """ModelEntries of a component's HFTensor table (its paths relative to `root`)."""
    return [ModelEntry(root + e.path, e.layer, e.hf_key, lambda a, shape, f=e.to_flax: f(a), e.to_hf)
            for e in table]


def group_by_path(table: list) -> dict:
    """{param path: [its entries]} in table order (a stacked param has one entry per layer)."""
    groups: dict = {}
    for e in table:
        groups.setdefault(e.path, []).append(e)
    return groups


def load_entries(model: nnx.Module, table: list, read: Callable, file_key: Callable, *,
                 target=None, where: str = "checkpoint") -> None:
    """Fills every Param of an abstractly built `model` from `read(canonical name)` (numpy-like),
    one parameter at a time (a stacked one in one preallocated buffer). `target`: a numpy
    dtype every floating tensor is cast to (None: kept). `file_key(name)`: the name in the file,
    for errors. Raises naming the tensor whose shape does not fit."""
    for path, entries in group_by_path(table).items():
        var, buf = get_param(model, path), None
        full = tuple(var.shape)
        for e in entries:
            shape = full if e.layer is None else full[1:]
            raw = read(e.name)
            try:
                arr = np.asarray(e.to_flax(raw, shape))
            except ValueError:  # a reshape to the model's shape failed
                arr = None
            if arr is None or arr.shape != shape:
                raise ValueError(f"{where}: tensor {file_key(e.name)!r} has shape {list(raw.shape)}, "
                                 f"which does not fit parameter {'.'.join(path)} {list(full)}")
            if e.layer is None:
                buf = cast_floating(arr, target)
            else:
                if buf is None:  # one preallocated stack: no per-layer copies kept around
                    buf = np.empty(full, target or arr.dtype)
                buf[e.layer] = arr
        var.set_value(jnp.asarray(buf))
        del buf


def cast_floating(a: np.ndarray, target) -> np.ndarray:
    """`a` cast to `target` when it is a floating array (bf16 included) and target is set."""
    return a.astype(target) if target is not None and jnp.issubdtype(a.dtype, jnp.floating) else a


def export_specs(model: nnx.Module, table: list, extras: dict) -> list:
    """[(hf name, numpy dtype, HF shape)] of every tensor `export_arrays` yields, in order."""
    specs = []
    for path, entries in group_by_path(table).items():
        var = get_param(model, path)
        dt, full = np.dtype(var.dtype), tuple(var.shape)
        for e in entries:
            # A zero-stride stand-in gives the HF shape without touching memory.
            probe = np.broadcast_to(np.zeros((), dt), full if e.layer is None else full[1:])
            specs.append((e.name, dt, e.to_hf(probe).shape))
    return specs + [(n, np.dtype(v.dtype), tuple(v.shape)) for n, v in extras.items()]


def export_arrays(model: nnx.Module, table: list, extras: dict):
    """Yields every tensor in HF layout in `export_specs` order, one parameter on the host at a time."""
    for path, entries in group_by_path(table).items():
        host = np.asarray(jax.device_get(get_param(model, path).get_value()))
        for e in entries:
            yield np.ascontiguousarray(e.to_hf(host if e.layer is None else host[e.layer]))
        del host
    for v in extras.values():
        yield np.asarray(jax.device_get(v))


def check_all_loaded(model: nnx.Module, where: str) -> None:
    """Raises naming every Param still abstract after a load from `where` (a loader bug)."""
    left = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(nnx.state(model))
            if isinstance(x, jax.ShapeDtypeStruct)]
    if left:
        raise RuntimeError(f"{where}: parameters left unloaded (a loader bug): {left}")


def read_config_json(path: str, config_name: str) -> dict:
    """The parsed config.json of the checkpoint folder `path`; an error naming `config_name`
    (the family's config class, to pass as config=) when there is none."""
    import json
    import os

    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise ValueError(f"{path}: no config.json next to the weights, so the model shape is "
                         f"unknown; pass config={config_name}(...) or preset=NAME")
    with open(cfg_file) as f:
        return json.load(f)


def with_embedding_rows(config, ckpt, file_key: Optional[str]):
    """`config` with text.vocab_size = the rows of the embedding tensor `file_key` (safetensors
    header only; releases pad the table differently); unchanged when file_key is None."""
    if file_key is None:
        return config
    return config.replace(text=dataclasses.replace(config.text, vocab_size=ckpt.info(file_key)[1][0]))


def tied_head_extra(model: nnx.Module, value: np.ndarray, file_key: str, where: str) -> jax.Array:
    """A tied model's stored lm_head (kept as an extra for exact round trips), which must equal
    its loaded embeddings."""
    embedding = np.asarray(jax.device_get(model.language_model.embed_tokens.get_value()))
    if not np.array_equal(value, embedding):
        raise ValueError(f"{where}: {file_key!r} differs from the embeddings but the config ties them; "
                         "use a config with tie_word_embeddings=False")
    return jnp.asarray(value)
