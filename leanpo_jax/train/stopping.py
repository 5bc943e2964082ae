"""When the training loop stops early, decided without a host sync on every step.

    skips = SkipLimit(config.train.max_consecutive_skips, consecutive_at_start)
    with AgreedStop(mesh) as stop:
        while ...:
            state, metrics = step_fn(state, batch)          # dispatched, not waited for
            count = skips.check(metrics["optim/skipped"][0])  # None, or the count at the limit
            ...
            signum = stop.poll()   # 0: go on; else every process stops at this step

Both read device values one step late: fetching step s-1's scalar waits for step s-1 only,
while step s is already queued, so the device never idles on the host (the loop used to fetch
every step's metrics, which serialised host and device).

Multi-host: SIGTERM / SIGINT reach processes one by one (a preemption notice may go to one host
only), and a checkpoint save is collective, so the stop step must be the same on every process.
`AgreedStop` all-reduces (max) each process's pending signal number with one tiny jitted
collective per step; every process sees the same value at the same poll and stops at the same
step. Orbax 0.12's `CheckpointManager.reached_preemption` builds on JAX's preemption sync
manager instead, which hooks SIGTERM in C++ below Python's signal handlers (and knows no
SIGINT); the explicit all-reduce keeps one mechanism for both signals and for one process.
"""

from __future__ import annotations

import signal
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from leanpo_jax.train.checkpoint import SigtermFlag


def signal_name(signum: int) -> str:
    """"SIGTERM" / "SIGINT" / ... for a signal number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class SkipLimit:
    """Tells the loop the step at which `limit` non-finite (skipped) updates in a row are reached.

    `check(consecutive)` is called once per step with that step's consecutive-skip counter (a
    device scalar, `optim/skipped`). The counter grows by at most one per step, so step s can
    reach the limit only when step s-1's count was >= limit - 1: step s-1's count is fetched one
    step late, and step s's count at once only in that case (when updates are already being
    skipped). The result is exact: the count at the very step the limit is reached, as if every
    step's counter were fetched.
    """

    def __init__(self, limit: int, consecutive: int = 0):
        self.limit = int(limit)
        self._known = int(consecutive)  # the count as of the last step whose count was fetched
        self._pending = None  # the previous step's counter, not fetched yet

    def check(self, consecutive: jax.Array) -> Optional[int]:
        """None, or the consecutive count (>= limit) when this step reached the limit."""
        if self._pending is not None:
            self._known = int(jax.device_get(self._pending))
            self._pending = None
        if self._known + 1 < self.limit:  # this step cannot reach the limit
            self._pending = consecutive
            return None
        self._known = int(jax.device_get(consecutive))
        return self._known if self._known >= self.limit else None


class AgreedStop:
    """SIGTERM (and SIGINT = Ctrl-C with `sigint=True`) requests that every process of the run
    acts on at the same step; a context manager around the loop (it installs `SigtermFlag`).

    `poll()` is called once per step by every process, at the same point of the loop, and
    returns 0 (go on) or the signal number to stop for: save a checkpoint, exit 128 + signum.
    * One process: the local request, read at the call (no collective).
    * Several processes: each poll submits this process's first signal number (0 = none) to a
      jitted max over a [device_count] array (one element per device, on `mesh`) and returns
      the max submitted by the previous poll: the same on every process at the same poll, so
      all stop at the same step, one step after the signal reached any process. SIGTERM (15)
      wins over SIGINT (2) when both arrived. A second Ctrl-C raises KeyboardInterrupt at
      once on the process that got it (`SigtermFlag`).
    """

    def __init__(self, mesh: jax.sharding.Mesh, *, sigint: bool = True):
        self.flag = SigtermFlag(sigint=sigint)
        self._mesh = mesh
        self._pending = None
        self._multi = jax.process_count() > 1
        if self._multi:
            self._sharding = NamedSharding(mesh, P(tuple(mesh.axis_names)))
            self._max = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))

    def __enter__(self) -> "AgreedStop":
        self.flag.__enter__()
        return self

    def __exit__(self, *exc):
        return self.flag.__exit__(*exc)

    def _submit(self, signum: int) -> jax.Array:
        shape = (self._mesh.size,)
        local = [jax.device_put(np.full((1,), signum, np.int32), d)
                 for d in self._sharding.addressable_devices]
        values = jax.make_array_from_single_device_arrays(shape, self._sharding, local)
        return self._max(values)

    def poll(self) -> int:
        """0, or the signal number every process stops for at this step (see the class doc)."""
        if not self._multi:
            return self.flag.signum
        previous, self._pending = self._pending, self._submit(self.flag.signum)
        return 0 if previous is None else int(jax.device_get(previous))
