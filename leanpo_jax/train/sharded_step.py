"""The train step jitted for a mesh: `train.step.make_train_step` with the state's and the
batch's shardings (the layouts of `train.state.state_shardings` / `train.batch_placement`).

    state = shard_state(state, mesh)                    # or init_state(..., mesh=mesh)
    step = sharded_train_step(model_def, cfg, opt_cfg, state, batch, mesh)
    state, metrics = step(state, global_batch(host_batch, mesh))
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

from leanpo_jax.train.batch_placement import batch_shardings
from leanpo_jax.train.partitioning import DEFAULT_RULES
from leanpo_jax.train.state import state_shardings
from leanpo_jax.train.step import make_train_step


def sharded_train_step(model_def: Any, cfg: Any, opt_cfg: Any, state: Any, batch_example: Any,
                       mesh: jax.sharding.Mesh, rules=DEFAULT_RULES, *, names_from: Any = None):
    """`make_train_step` jitted for `mesh`; returns `step(state, batch) -> (state, metrics)`.

    in_shardings = (state_shardings(state), batch_shardings(batch_example)), out_shardings =
    (state_shardings(state), replicated metrics); the state is donated. `state` and
    `batch_example` fix the structure only (concrete or abstract: arrays or
    ShapeDtypeStructs); every batch passed later must have the same keys and global shapes,
    and its leading (global) dim must divide over data * fsdp (else ValueError naming
    data.batch_size, raised here). Pass the state from `shard_state` / `init_state(mesh=)` and
    batches from `global_batch`; host numpy batches work on one process.

    The returned callable enters `jax.set_mesh(mesh)` itself around each call (and around
    `step.lower(...)`); the underlying jitted function is `step.jitted` (call that one under
    `with jax.set_mesh(mesh):`). `names_from` as in `state_shardings`.
    """
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
