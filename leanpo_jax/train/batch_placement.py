"""Batches on the mesh: the leading (batch) dim split over ("data", "fsdp"), the rest replicated.

    batch = global_batch(host_batch, mesh)        # each host's rows -> one global jax.Array per field
    b_sh = batch_shardings(batch_example, mesh)   # the same layout, for jit in_shardings

The global batch is data.batch_size * process_count rows; it must be divisible by the
data-parallel size (`train.mesh.data_parallel_size`: mesh.data * mesh.fsdp), else a
ValueError names data.batch_size and the multiple to use (`check_batch_size`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from leanpo_jax.train.mesh import BATCH_AXES, data_parallel_size


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
    """Raise ValueError (naming data.batch_size) unless the global batch divides over data*fsdp."""
    dp = data_parallel_size(mesh)
    if global_batch_size % dp:
        raise ValueError(
            f"global batch {global_batch_size} (data.batch_size * {jax.process_count()} "
            f"processes) is not divisible by the data-parallel size {dp} (mesh.data * "
            f"mesh.fsdp = {dict(mesh.shape)}); set data.batch_size to a multiple of "
            f"{dp // math.gcd(dp, jax.process_count())} or change mesh.data / mesh.fsdp")


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
