"""The device mesh and multi-host start-up, from the `mesh` and `distributed` config blocks.

    maybe_initialize_distributed(config)     # before anything touches devices
    mesh = mesh_from_config(config)          # axes ("data", "fsdp", "tensor"), all Auto
    data_parallel_size(mesh)                 # data * fsdp: how many ways the batch is split

Config keys (declared once in `config_schema.MESH` / `config_schema.DISTRIBUTED`;
`mesh_config()` / `distributed_config()` are those defaults as ConfigDicts):
  mesh.data, mesh.fsdp, mesh.tensor  ints >= 1, or -1 (at most one) = "all remaining devices".
      The product must equal the device count. data * fsdp is the data-parallel size: the
      global batch (data.batch_size * process_count) must be divisible by it.
  distributed.coordinator_address  "host:port" of process 0, "" = single process (no-op).
  distributed.num_processes, distributed.process_id  ints, used with coordinator_address.
  distributed.auto  bool: call jax.distributed.initialize() with no arguments (TPU pods,
      SLURM / cluster environments that JAX detects itself).

What the axes are for (which parameter dims they split) is `train.partitioning`; how batches
are laid over them is `train.batch_placement`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType

from leanpo_jax.config_schema import DISTRIBUTED, MESH

MESH_AXES = ("data", "fsdp", "tensor")
# The batch dimension is split over both data-parallel axes (FSDP is data parallelism whose
# parameters are sharded too).
BATCH_AXES = ("data", "fsdp")


def mesh_config() -> ml_collections.ConfigDict:
    """Default `mesh` block: pure FSDP over every device (data 1, fsdp -1, tensor 1)."""
    return MESH.to_config_dict()


def distributed_config() -> ml_collections.ConfigDict:
    """Default `distributed` block: single process (nothing to initialise)."""
    return DISTRIBUTED.to_config_dict()


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


def maybe_initialize_distributed(cfg: Any) -> bool:
    """jax.distributed.initialize when `distributed` is configured (see the module docstring).

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
