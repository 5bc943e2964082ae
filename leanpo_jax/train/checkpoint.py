"""Checkpoints (Orbax) and resume-config checks (the stop-request flag is train.stopping's).

    ckpt = Checkpointer(workdir + "/checkpoints", max_to_keep=3)
    ckpt.save(step, state, data_state=it.get_state(), meta={"config": cfg.to_dict(), ...})
    state, data_state, meta = ckpt.restore(abstract_state)     # latest step, onto any mesh
    ckpt.wait(); ckpt.close()

Layout: one Orbax `CheckpointManager` step folder per saved step with three items,
  state  the TrainState arrays (StandardSave, OCDBT/tensorstore; each process writes its shards)
  data   JSON: the data iterator's state (incl. skip counts)
  meta   JSON: the config as a dict, where the frozen weights came from, anything else.
The state is stored as a nested dict of plain arrays keyed by the pytree path (e.g.
opt_state/inner_state/1/0/mu/language_model/...), not as the TrainState pytree itself:
restoring rebuilds the exact structure from the caller's abstract TrainState (its treedef),
so nnx.State / optax namedtuples never depend on how a given Orbax version serialises custom
nodes (0.12.8 here, 0.12.4 on the GPU image). Typed PRNG keys are stored as
`jax.random.key_data` (uint32) and wrapped back with the target key's impl.

Atomicity: Orbax writes each step into a temporary folder and renames it when every process
has finished, so an interrupted save never looks like a checkpoint; `all_steps` / `latest_step`
list finished steps only (also excluding this process's own still-running async save).
"""

from __future__ import annotations

import errno
import math
import os
import shutil
from typing import List, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

_ITEMS = ("state", "data", "meta")


# ----------------------------------------------------------------------------- pytree <-> dict
def _key_str(k) -> str:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey / FlattenedIndexKey
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _is_key(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _names(path) -> Tuple[str, ...]:
    """A leaf's checkpoint path. The trailing `.value` of an nnx Variable is dropped so the
    layout does not depend on whether a Flax version flattens Variables as nodes or leaves."""
    names = [_key_str(k) for k in path]
    if len(names) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and names[-1] == "value":
        names.pop()
    return tuple(names) or ("value",)


def _to_nested(tree) -> dict:
    """Pytree -> nested dict {path component: ... leaf} (plain dicts: any Orbax writes them)."""
    nested: dict = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = _names(path)
        node = nested
        for name in names[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ValueError(f"pytree path {names} collides with a leaf; cannot checkpoint")
        if names[-1] in node:
            raise ValueError(f"two pytree leaves map to the same checkpoint path {names}")
        node[names[-1]] = leaf
    return nested


def _get_path(nested: Mapping, names: Sequence[str]):
    for name in names:
        nested = nested[name]
    return nested


def _host_value(x):
    # Keys go to disk as their uint32 words (Orbax cannot write key dtypes); everything else
    # unchanged (jax.Arrays keep their shardings, so each process writes only its shards).
    return jax.random.key_data(x) if _is_key(x) else x


def _abstract_leaf(x, names):
    """Target ShapeDtypeStruct (with sharding) for one leaf of the caller's abstract state."""
    sharding = getattr(x, "sharding", None)
    if sharding is None:
        if jax.process_count() > 1:
            raise ValueError(f"restore target leaf {'/'.join(names)} has no sharding; give "
                             "every leaf of abstract_state a sharding in multi-process runs")
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if _is_key(x):
        # key_data adds a trailing dim; the key's sharding is a valid prefix for it.
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):  # Python / numpy scalars
        x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def _key_impl(x):
    try:
        return jax.random.key_impl(x)  # concrete key arrays
    except Exception:  # noqa: BLE001 - abstract keys: the impl lives on the dtype
        return getattr(x.dtype, "_impl", None)


def _jsonable(x):
    """JSON-safe copy: numpy scalars/arrays -> Python, tuples -> lists, keys -> str."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


# ----------------------------------------------------------------------------- checkpointer
def _size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GiB"


def _free_space(path: str) -> str:
    while path and not os.path.isdir(path):  # the folder may not exist yet
        path = os.path.dirname(path)
    try:
        return f"{_size(shutil.disk_usage(path or '.').free)} free"
    except OSError:
        return "free space unknown"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (the disk is full); the message says what is intact."""


class Checkpointer:
    """Orbax CheckpointManager over `directory` (made absolute; created by the first save, so a
    run that fails before saving leaves no empty folder).

    Every process of a multi-host run must construct it and call save / restore / wait /
    close in the same order (Orbax synchronises them). `max_to_keep` newest steps are kept.
    With `async_save` the arrays are copied to host memory in `save` and written in the
    background; the next save, `restore`, `read_meta` and `wait` wait for it.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=False, enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)
        self._pending: Optional[int] = None  # step of this process's last async save
        self._pending_bytes = 0  # its arrays' size, for the disk-full message

    def _in_flight(self) -> Optional[int]:
        if self._pending is not None and not self._manager.is_saving_in_progress():
            self._pending = None
        return self._pending

    def all_steps(self) -> List[int]:
        """Finished checkpoint steps, ascending (an async save still running is excluded)."""
        pending = self._in_flight()
        return sorted(int(s) for s in self._manager.all_steps() if s != pending)

    def latest_step(self) -> Optional[int]:
        """The newest finished step, None when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, state, *, data_state: dict, meta: dict, force: bool = False) -> bool:
        """Saves `state` (any pytree of arrays, typed keys allowed), `data_state` and `meta`
        (JSON dicts; numpy values and tuples are converted) as step `step`.

        Returns False without writing when `step` is already saved (or being saved), else
        True once the save is started (async) or done (sync). `force` is passed to Orbax
        (no save interval is configured, so every new step is saved either way).
        """
        step = int(step)
        if step in self._manager.all_steps():  # includes an in-flight save of that step
            return False
        nested = _to_nested(jax.tree.map(_host_value, state))
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(nested),
            data=ocp.args.JsonSave(_jsonable(dict(data_state))),
            meta=ocp.args.JsonSave(_jsonable(dict(meta))),
        )
        self._pending_bytes = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
        try:
            saved = bool(self._manager.save(step, args=args, force=force))
        except Exception as err:  # noqa: BLE001  (re-raised unless it is a full disk)
            self._raise_if_disk_full(err, step)
            raise
        if saved and self._manager.is_saving_in_progress():
            self._pending = step
        return saved

    def _raise_if_disk_full(self, err: BaseException, step: int) -> None:
        """A full disk becomes one CheckpointWriteError line: where, how much, what is intact."""
        seen = set()
        while err is not None and id(err) not in seen:
            seen.add(id(err))
            if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left" in str(err):
                break
            err = err.__cause__ or err.__context__
        else:
            return
        intact = [s for s in self._manager.all_steps() if s != step]
        kept = f"checkpoint {intact[-1]} is intact" if intact else "no earlier checkpoint exists"
        raise CheckpointWriteError(
            f"no space left on the device of {self.directory} while saving checkpoint {step} "
            f"({_free_space(self.directory)}; the state needs about {_size(self._pending_bytes)}); "
            f"{kept}. Free space (or lower checkpoint.max_to_keep) and rerun the same command") from None

    def resolve_step(self, step: Optional[int]) -> int:
        """`step` if it is saved, the latest for None; FileNotFoundError naming the saved steps."""
        self.wait()  # a save of this process must be finished before it can be read
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if int(step) not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} "
                                    f"(saved steps: {steps})")
        return int(step)

    def restore(self, abstract_state, step: Optional[int] = None) -> tuple:
        """-> (state, data_state, meta) of `step` (default: the latest).

        `abstract_state`: the target TrainState (or any pytree) of jax.ShapeDtypeStruct with
        `.sharding` set, or of concrete arrays whose shardings are used. The result has its
        exact pytree structure and dtypes, each array with the target's sharding (this is how
        a run resumes on another mesh / device count); values are bit-identical to the saved
        ones. Raises FileNotFoundError naming the directory when there is no checkpoint.
        """
        step = self.resolve_step(step)
        flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
        names = [_names(p) for p, _ in flat]
        targets = [_abstract_leaf(x, n) for (_, x), n in zip(flat, names)]
        target_nested = _to_nested(jax.tree_util.tree_unflatten(treedef, targets))
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target_nested),
                data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        except ValueError as e:  # Orbax names the mismatching leaves; say where and why
            raise ValueError(
                f"checkpoint step {step} in {self.directory} does not match the state to restore "
                f"into (model / optimizer / frozen-module config changed?): {e}") from e
        arrays = restored["state"]
        leaves = []
        for (_, x), n in zip(flat, names):
            value = _get_path(arrays, n)
            if _is_key(x):
                value = jax.random.wrap_key_data(value, impl=_key_impl(x))
            leaves.append(value)
        state = jax.tree_util.tree_unflatten(treedef, leaves)
        return state, dict(restored["data"] or {}), dict(restored["meta"] or {})

    def restore_data_state(self, step: Optional[int] = None) -> dict:
        """The data-iterator state of `step` (default: the latest) without reading any array."""
        step = self.resolve_step(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        return dict(restored["data"] or {})

    def read_meta(self, step: Optional[int] = None) -> dict:
        """The `meta` dict of `step` (default: the latest) without reading any array."""
        step = self.resolve_step(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"] or {})

    def wait(self) -> None:
        """Blocks until this process's pending async save is on disk (finalised)."""
        try:
            self._manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001  (re-raised unless it is a full disk)
            self._raise_if_disk_full(err, self._pending if self._pending is not None else -1)
            raise
        self._pending = None

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's threads."""
        self._manager.wait_until_finished()
        self._manager.close()
        self._pending = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- config checks
def flatten_config(cfg) -> dict:
    """ConfigDict / nested mapping -> {"a.b.c": value}; tuples and lists become lists (nested
    ones too) and numpy scalars Python scalars, so a JSON round trip compares equal. An empty
    sub-dict is kept as the value {} (a key, not nothing)."""
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    out: dict = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if hasattr(value, "to_dict"):
                value = value.to_dict()
            if isinstance(value, Mapping) and value:
                walk(value, name + ".")
            else:
                out[name] = _jsonable(dict(value) if isinstance(value, Mapping) else value)

    walk(cfg, "")
    return out


def _allowed(key: str, allowed: Sequence[str]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in allowed)


def _equal(a, b) -> bool:
    # 1 == 1.0 is fine (JSON may change the type); NaN equals NaN (an unchanged config).
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


_MISSING = object()


def config_differences(saved: dict, current: dict, *, allowed: Sequence[str]) -> List[str]:
    """Sorted dotted keys whose values differ between two configs (dicts or ConfigDicts,
    nested or already flat); a key present in only one counts. Keys equal to, or under,
    an entry of `allowed` (e.g. "num_steps", "logging") are ignored."""
    a, b = flatten_config(saved), flatten_config(current)
    keys = (k for k in set(a) | set(b) if not _allowed(k, allowed))
    return sorted(k for k in keys if not _equal(a.get(k, _MISSING), b.get(k, _MISSING)))


def check_resume_config(saved: dict, current: dict, *, allowed: Sequence[str],
                        directory: str) -> None:
    """Raises ValueError when resuming from `directory` with a config that differs from the
    saved one outside `allowed`, listing each key with its saved and current value."""
    diffs = config_differences(saved, current, allowed=allowed)
    if not diffs:
        return
    a, b = flatten_config(saved), flatten_config(current)
    show = lambda d, k: repr(d[k]) if k in d else "<absent>"  # noqa: E731
    lines = "\n".join(f"  {k}: saved {show(a, k)}, current {show(b, k)}" for k in diffs)
    raise ValueError(
        f"the checkpoint in {directory} was written with a different config; cannot resume "
        f"with these {len(diffs)} change(s):\n{lines}\nUse a new --workdir to start a fresh "
        f"run, or restore the saved value(s) to resume (only {sorted(allowed)} may change).")
