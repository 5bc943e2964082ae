"""Logical-axis rules -> PartitionSpecs -> NamedShardings for parameters and what mirrors them;
models built or moved onto a mesh.

    model = build_sharded(lambda: build_model("tiny"), mesh)   # or shard_model(model, mesh)
    p_sh = param_shardings(nnx.state(model, nnx.Param), mesh)
    o_sh = like_params(opt_state_abstract, p_sh)     # adam mu/nu follow params, scalars replicated

Rules (`DEFAULT_RULES`, pairs usable with `nnx.logical_axis_rules` too) map each logical axis
name of a parameter's `out_sharding` metadata to a mesh axis (`train.mesh.MESH_AXES`), a tuple
of mesh axes, or None. `spec_for` resolves one array's names, dimension by dimension from the
first, with two fallbacks that keep every spec valid (Flax's own eager mapping has neither):
  * a mesh axis already used by an earlier dim of the same array is dropped from the later
    dim's rule (a rule left empty = replicated);
  * a dim whose size is not divisible by the product of its mesh axes' sizes is replicated
    (e.g. GQA kv_heads=2 on tensor=4; tiny test shapes).
That is why `build_sharded` does not use Flax eager sharding (mesh + rules active at creation):
it builds abstractly, resolves the specs here and jits the constructor with out_shardings.
The train state's layout (params + optimizer state + step + rng) is `train.state.state_shardings`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from leanpo_jax.train.mesh import BATCH_AXES

# logical axis -> mesh axis / tuple of mesh axes / None (replicated).
DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("vision_embed", "fsdp"),
    ("vision_mlp", "tensor"),
    ("vision_heads", "tensor"),
    ("vision_head_dim", None),
)


def _rules_dict(rules) -> dict:
    return dict(rules.items() if isinstance(rules, Mapping) else rules)


def spec_for(shape: Sequence[int], names: Optional[Sequence[Optional[str]]],
             mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> P:
    """PartitionSpec for one array from its logical axis `names` (None / missing = replicated).

    Unknown logical names are replicated; a rule naming a mesh axis the mesh lacks is an
    error. Fallbacks (module docstring): a mesh axis is used at most once per array (later
    dims drop it), and a dim not divisible by its mesh axes' total size is replicated.
    """
    if names is None:
        return P()
    if len(names) != len(shape):
        raise ValueError(f"{len(names)} logical names {tuple(names)} for shape {tuple(shape)}")
    table = _rules_dict(rules)
    used: set = set()
    spec = []
    for dim, name in zip(shape, names):
        target = table.get(name) if name is not None else None
        axes = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
        for axis in axes:
            if axis not in mesh.shape:
                raise ValueError(f"rule {name!r} -> {target!r}: mesh has no axis {axis!r} "
                                 f"(axes: {tuple(mesh.shape)})")
        axes = tuple(a for a in axes if a not in used)
        if not axes or dim % math.prod(mesh.shape[a] for a in axes):
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def is_variable(x) -> bool:
    """True for an nnx Variable (a Param or any other kind): the leaves shardings are per."""
    return isinstance(x, nnx.Variable)


def has_variables(tree: Any) -> bool:
    """True when some leaf of `tree` is an nnx Variable (its logical names are available)."""
    return any(is_variable(x) for x in jax.tree.leaves(tree, is_leaf=is_variable))


def _leaf_shape(x) -> tuple:
    if is_variable(x):
        x = x.get_value() if hasattr(x, "get_value") else x[...]
    return tuple(getattr(x, "shape", np.shape(x)))


def _leaf_names(x):
    if not is_variable(x):
        return None
    meta = x.get_metadata()
    return meta.get("out_sharding", meta.get("sharding"))


def param_shardings(tree: Any, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a model or any state whose leaves are nnx Variables.

    `tree`: an NNX module (abstract or concrete; its full `nnx.state` is used) or a state /
    pytree holding Variables (e.g. `nnx.state(model, nnx.Param)`, a trainable or frozen
    subset). Returns the same structure with each Variable replaced by a NamedSharding from
    its `out_sharding` metadata via `spec_for`; Variables without names (rng state, ...) and
    non-Variable leaves (plain arrays, scalars) are replicated. Usable directly as jit
    in/out_shardings for an argument of that structure (a sharding per Variable is a prefix);
    `nnx.to_pure_dict(result)` gives the layout for pure-dict parameter trees.
    """
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree)

    def one(x):
        if is_variable(x) or hasattr(x, "shape"):
            return NamedSharding(mesh, spec_for(_leaf_shape(x), _leaf_names(x), mesh, rules))
        return NamedSharding(mesh, P())

    return jax.tree.map(one, tree, is_leaf=is_variable)


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _norm_path(path) -> tuple:
    names = tuple(_key_name(k) for k in path)
    return names[:-1] if names and names[-1] == "value" else names


def like_params(opt_state: Any, param_shards: Any, mesh: Optional[jax.sharding.Mesh] = None):
    """Shardings for an optimizer state (abstract or concrete) whose leaves mirror params.

    A leaf takes the sharding of the parameter whose path is the longest suffix of the leaf's
    path and whose spec fits its shape (adam mu/nu, optax.masked subsets, State or pure-dict
    layouts alike); every other leaf (step counts, scalars, ...) is replicated. `param_shards`
    is the output of `param_shardings` (for the parameters the optimizer updates).
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(
        param_shards, is_leaf=lambda x: isinstance(x, NamedSharding))
    by_path = {_norm_path(p): s for p, s in flat if isinstance(s, NamedSharding)}
    if mesh is None:
        if not by_path:
            raise ValueError("like_params needs `mesh` when param_shards holds no NamedSharding")
        mesh = next(iter(by_path.values())).mesh
    lengths = sorted({len(p) for p in by_path}, reverse=True)

    def one(path, leaf):
        path = _norm_path(path)
        shape = _leaf_shape(leaf)
        for n in lengths:
            s = by_path.get(path[-n:]) if n <= len(path) else None
            if s is not None and len(s.spec) <= len(shape) and _fits(shape, s):
                return s
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(one, opt_state, is_leaf=is_variable)


def _fits(shape, sharding: NamedSharding) -> bool:
    for dim, axes in zip(shape, sharding.spec):
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else axes
        if dim % math.prod(sharding.mesh.shape[a] for a in axes):
            return False
    return True


def shard_model(model: nnx.Module, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> nnx.Module:
    """Moves a concrete model's whole state onto `mesh` (in place; also returned)."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, param_shardings(state, mesh, rules)))
    return model


def build_sharded(constructor: Callable[[], nnx.Module], mesh: jax.sharding.Mesh,
                  rules=DEFAULT_RULES) -> nnx.Module:
    """Builds `constructor()` with every array created directly in its shard (no full copy).

    Abstract build (nnx.eval_shape) -> specs via `spec_for` (with the fallbacks) -> the
    constructor jitted with those out_shardings under `jax.set_mesh(mesh)`. Flax rules are
    NOT activated during the build, so `params.logical_param` keeps eager sharding off and
    the names stay metadata. Same values as an unsharded build with the same seed, up to
    float rounding (XLA may fuse the init arithmetic differently: ~1 ulp).
    """
    abstract = nnx.eval_shape(constructor)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = param_shardings(abstract_state, mesh, rules)

    def make():
        return nnx.state(constructor())

    with jax.set_mesh(mesh):
        state = jax.jit(make, out_shardings=shardings)()
    return nnx.merge(graphdef, state)
