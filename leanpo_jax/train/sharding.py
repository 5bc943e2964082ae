"""Device mesh, logical-axis rules -> NamedShardings (params, optimizer state, batch), global
batches and multi-host start-up.

    maybe_initialize_distributed(config)             # before anything touches devices
    mesh = mesh_from_config(config)                  # axes ("data", "fsdp", "tensor"), Auto
    model = build_sharded(lambda: build_model("tiny"), mesh)   # or shard_model(model, mesh)
    p_sh = param_shardings(nnx.state(model, nnx.Param), mesh)
    o_sh = like_params(opt_state_abstract, p_sh)     # adam mu/nu follow params, scalars replicated
    batch = global_batch(host_batch, mesh)           # leading dim over ("data", "fsdp")

Config keys (ml_collections; `mesh_config()` / `distributed_config()` give the defaults):
  mesh.data, mesh.fsdp, mesh.tensor  ints >= 1, or -1 (at most one) = "all remaining devices".
      The product must equal the device count. data * fsdp is the data-parallel size: the
      global batch (data.batch_size * process_count) must be divisible by it.
  distributed.coordinator_address  "host:port" of process 0, "" = single process (no-op).
  distributed.num_processes, distributed.process_id  ints, used with coordinator_address.
  distributed.auto  bool: call jax.distributed.initialize() with no arguments (TPU pods,
      SLURM / cluster environments that JAX detects itself).

Rules (`DEFAULT_RULES`, pairs usable with `nnx.logical_axis_rules` too) map each logical axis
name of a parameter's `out_sharding` metadata to a mesh axis, a tuple of mesh axes, or None.
`spec_for` resolves one array's names, dimension by dimension from the first, with two
fallbacks that keep every spec valid (Flax's own eager mapping has neither):
  * a mesh axis already used by an earlier dim of the same array is dropped from the later
    dim's rule (a rule left empty = replicated);
  * a dim whose size is not divisible by the product of its mesh axes' sizes is replicated
    (e.g. GQA kv_heads=2 on tensor=4; tiny test shapes).
That is why `build_sharded` does not use Flax eager sharding (mesh + rules active at creation):
it builds abstractly, resolves the specs here and jits the constructor with out_shardings.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

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


# ----------------------------------------------------------------------------- config / mesh
def mesh_config() -> ml_collections.ConfigDict:
    """Default `mesh` block: pure FSDP over every device (data 1, fsdp -1, tensor 1)."""
    return ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})


def distributed_config() -> ml_collections.ConfigDict:
    """Default `distributed` block: single process (nothing to initialise)."""
    return ml_collections.ConfigDict(
        {"coordinator_address": "", "num_processes": 1, "process_id": 0, "auto": False})


def _get(cfg: Any, key: str, default=None):
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def mesh_shape(cfg: Any, num_devices: int) -> dict:
    """Resolve the {data, fsdp, tensor} sizes (one -1 filled) for `num_devices` devices.

    `cfg` is the root config (with a `mesh` block) or the mesh block itself; missing axes
    default to 1. Raises ValueError naming the `mesh.*` keys on any inconsistency.
    """
    block = _get(cfg, "mesh", None)
    block = cfg if block is None else block
    sizes = {}
    for axis in MESH_AXES:
        value = _get(block, axis, 1)
        if not isinstance(value, (int, np.integer)) or (value < 1 and value != -1):
            raise ValueError(f"mesh.{axis}={value!r}: use a positive int or -1 (fill the rest)")
        sizes[axis] = int(value)
    fill = [a for a, v in sizes.items() if v == -1]
    if len(fill) > 1:
        raise ValueError(f"mesh.{' and mesh.'.join(fill)} are all -1: at most one axis may be -1")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    desc = ", ".join(f"mesh.{a}={v}" for a, v in sizes.items())
    if fill:
        if num_devices % fixed:
            raise ValueError(
                f"{desc}: the fixed axes' product {fixed} does not divide the {num_devices} "
                f"devices; choose mesh.* sizes whose product divides {num_devices}")
        sizes[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"{desc}: product {fixed} != {num_devices} devices; make mesh.data * mesh.fsdp * "
            f"mesh.tensor equal {num_devices}, or set one of them to -1")
    return sizes


def mesh_from_config(cfg: Any, devices: Optional[Sequence[jax.Device]] = None) -> jax.sharding.Mesh:
    """A Mesh over `devices` (default: all, every process) with axes ("data", "fsdp", "tensor"),
    all of AxisType.Auto (classic GSPMD propagation). Works on 1 device (all sizes 1)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(cfg, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
    """data * fsdp: how many ways the batch dimension is split."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.shape)


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
    """Raise ValueError (naming data.batch_size) unless the global batch divides over data*fsdp."""
    dp = data_parallel_size(mesh)
    if global_batch_size % dp:
        raise ValueError(
            f"global batch {global_batch_size} (data.batch_size * {jax.process_count()} "
            f"processes) is not divisible by the data-parallel size {dp} (mesh.data * "
            f"mesh.fsdp = {dict(mesh.shape)}); set data.batch_size to a multiple of "
            f"{dp // math.gcd(dp, jax.process_count())} or change mesh.data / mesh.fsdp")


# ----------------------------------------------------------------------------- rules -> specs
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


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def _leaf_shape(x) -> tuple:
    if _is_var(x):
        x = x.get_value() if hasattr(x, "get_value") else x[...]
    return tuple(getattr(x, "shape", np.shape(x)))


def _leaf_names(x):
    if not _is_var(x):
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
        if _is_var(x) or hasattr(x, "shape"):
            return NamedSharding(mesh, spec_for(_leaf_shape(x), _leaf_names(x), mesh, rules))
        return NamedSharding(mesh, P())

    return jax.tree.map(one, tree, is_leaf=_is_var)


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

    return jax.tree_util.tree_map_with_path(one, opt_state, is_leaf=_is_var)


def _fits(shape, sharding: NamedSharding) -> bool:
    for dim, axes in zip(shape, sharding.spec):
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else axes
        if dim % math.prod(sharding.mesh.shape[a] for a in axes):
            return False
    return True


# ----------------------------------------------------------------------------- batches
def batch_shardings(batch: Any, mesh: jax.sharding.Mesh, *,
                    global_batch_size: Optional[int] = None):
    """NamedSharding per batch field: leading dim over ("data", "fsdp"), the rest replicated;
    0-d leaves replicated. `batch`: a pytree of arrays / ShapeDtypeStructs (any leaf with
    `.shape`). The leading dims are taken as the GLOBAL batch size unless `global_batch_size`
    is given; it must be divisible by `data_parallel_size(mesh)` (else ValueError naming
    data.batch_size).
    """
    def one(x):
        shape = np.shape(x) if not hasattr(x, "shape") else x.shape
        if not shape:
            return NamedSharding(mesh, P())
        check_batch_size(shape[0] if global_batch_size is None else global_batch_size, mesh)
        return NamedSharding(mesh, P(BATCH_AXES))

    return jax.tree.map(one, batch)


def global_batch(host_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict:
    """Per-host numpy batch (leading dim B = data.batch_size) -> global jax Arrays.

    Every field becomes `jax.make_array_from_process_local_data` with global leading dim
    B * process_count, sharded like `batch_shardings`. Each process passes its own rows (the
    data pipeline reads shard `process_index`). 0-d fields must agree across processes.
    """
    procs = jax.process_count()
    out = {}
    for key, value in host_batch.items():
        value = np.asarray(value)
        if value.ndim == 0:
            out[key] = jax.make_array_from_process_local_data(NamedSharding(mesh, P()), value)
            continue
        global_shape = (value.shape[0] * procs,) + value.shape[1:]
        check_batch_size(global_shape[0], mesh)
        sharding = NamedSharding(mesh, P(BATCH_AXES))
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


# ----------------------------------------------------------------------------- models
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


# ----------------------------------------------------------------------------- multi-host
def maybe_initialize_distributed(cfg: Any) -> bool:
    """jax.distributed.initialize when `distributed` is configured (see module docstring).

    Returns True when this call (or an earlier one) initialised the distributed runtime,
    False for a single-process run. Must run before any device is touched.
    """
    block = _get(cfg, "distributed", None)
    if block is None:
        return False
    address = _get(block, "coordinator_address", "") or ""
    auto = bool(_get(block, "auto", False))
    if not address and not auto:
        return False
    if jax.distributed.is_initialized():
        return True
    if address:
        num, pid = _get(block, "num_processes", None), _get(block, "process_id", None)
        if num is None or pid is None or not 0 <= int(pid) < int(num):
            raise ValueError(
                f"distributed.coordinator_address={address!r} needs distributed.num_processes "
                f"(>= 1) and distributed.process_id in [0, num_processes); got {num!r}, {pid!r}")
        jax.distributed.initialize(coordinator_address=address, num_processes=int(num),
                                   process_id=int(pid))
    else:
        jax.distributed.initialize()
    return True


# ----------------------------------------------------------------------------- train state / step
def _has_vars(tree: Any) -> bool:
    return any(_is_var(x) for x in jax.tree.leaves(tree, is_leaf=_is_var))


def _reference_shardings(names_from: Any, mesh: jax.sharding.Mesh, rules):
    """param_shardings of whatever carries the logical names (see `state_shardings`)."""
    if hasattr(names_from, "graphdef") and hasattr(names_from, "config"):  # a train.state.ModelDef
        from leanpo_jax.models import abstract_model  # lazy: keep this module model-agnostic

        names_from = nnx.state(abstract_model(names_from.config), nnx.Param)
    return param_shardings(names_from, mesh, rules)


def _params_shardings(tree: Any, mesh, rules, reference):
    if _has_vars(tree) or reference is None:
        return param_shardings(tree, mesh, rules)
    # Plain arrays (names lost, e.g. a pure dict): take each leaf's sharding from the reference
    # parameter at the longest matching path suffix whose spec fits its shape.
    return like_params(tree, reference, mesh)


def state_shardings(state: Any, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES, *,
                    names_from: Any = None):
    """TrainState-shaped NamedShardings for `leanpo_jax.train.state.TrainState`.

    params["trainable"] and params["frozen"] by their logical names (`param_shardings`);
    opt_state like the trainable params (`like_params`: adam mu/nu follow them, counts and
    skip counters replicated); step and rng replicated. `state` may be concrete or abstract
    (`jax.eval_shape(lambda: init_state(...)[1])`). Usable as jit in/out_shardings for the
    state (each Variable gets one NamedSharding, a valid prefix).

    `init_state` keeps the nnx Variables (with their `out_sharding` names) in both params and
    the Adam moments, so `names_from` is not needed for it. Only when the param leaves are
    plain arrays (names dropped, e.g. `nnx.to_pure_dict` trees) pass `names_from`: an nnx
    Module (abstract or concrete), a state of Variables, or a `ModelDef` (an abstract
    VideoLLM is built from its config); leaves are then matched to its params by path.
    Without it, plain-array params are replicated.
    """
    reference = None if names_from is None else _reference_shardings(names_from, mesh, rules)
    params = state.params
    trainable = _params_shardings(params["trainable"], mesh, rules, reference)
    frozen = _params_shardings(params["frozen"], mesh, rules, reference)
    replicated = NamedSharding(mesh, P())
    return state.replace(
        params={"trainable": trainable, "frozen": frozen},
        opt_state=like_params(state.opt_state, trainable, mesh),
        step=replicated, rng=replicated,
    )


def shard_state(state: Any, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES, *,
                names_from: Any = None):
    """The concrete `state` moved onto `mesh` with `state_shardings` (jax.device_put).

    The input arrays are not donated; with jax.device_put a leaf already in place is reused.
    """
    return jax.device_put(state, state_shardings(state, mesh, rules, names_from=names_from))


def sharded_train_step(model_def: Any, cfg: Any, opt_cfg: Any, state: Any, batch_example: Any,
                       mesh: jax.sharding.Mesh, rules=DEFAULT_RULES, *, names_from: Any = None):
    """`leanpo_jax.train.step.make_train_step` jitted for `mesh`; returns `step(state, batch)`.

    in_shardings = (state_shardings(state), batch_shardings(batch_example)), out_shardings =
    (state_shardings(state), replicated metrics); the state is donated. `state` and
    `batch_example` fix the structure only (concrete or abstract: arrays or
    ShapeDtypeStructs); every batch passed later must have the same keys and global shapes,
    and its leading (global) dim must divide over data * fsdp (else ValueError naming
    data.batch_size, raised here). Pass the state from `shard_state` (or a jit that outputs
    these shardings) and batches from `global_batch`; host numpy batches work on one process.

        state = shard_state(state, mesh)
        step = sharded_train_step(model_def, cfg, opt_cfg, state, batch, mesh)
        state, metrics = step(state, batch)

    The returned callable enters `jax.set_mesh(mesh)` itself around each call (and around
    `step.lower(...)`); the underlying jitted function is `step.jitted` (call that one under
    `with jax.set_mesh(mesh):`). `names_from` as in `state_shardings`.
    """
    from leanpo_jax.train.step import make_train_step  # lazy: step imports models / losses

    s_sh = state_shardings(state, mesh, rules, names_from=names_from)
    b_sh = batch_shardings(batch_example, mesh)
    jitted = make_train_step(model_def, cfg, opt_cfg, in_shardings=(s_sh, b_sh),
                             out_shardings=(s_sh, NamedSharding(mesh, P())))

    def step(state, batch):
        with jax.set_mesh(mesh):
            return jitted(state, batch)

    def lower(state, batch):
        with jax.set_mesh(mesh):
            return jitted.lower(state, batch)

    step.jitted, step.lower = jitted, lower
    step.state_shardings, step.batch_shardings = s_sh, b_sh
    return step
