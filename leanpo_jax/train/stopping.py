"""When the training loop stops early, decided without a host sync on every step.

    skips = SkipLimit(config.train.max_consecutive_skips, consecutive_at_start)
    with AgreedStop(mesh) as stop:
        while ...:
            state, metrics = step_fn(state, batch)          # dispatched, not waited for
            count = skips.check(metrics["optim/skipped"][0])  # None, or the count at the limit
            ...
            agreed = stop.poll(read=r, skipped=k)   # the same on every process at this step
            # agreed.signum: 0 go on, else stop here; agreed.read / .skipped: records of all hosts

Both read device values one step late: fetching step s-1's scalar waits for step s-1 only,
while step s is already queued, so the device never idles on the host (the loop used to fetch
every step's metrics, which serialised host and device).

Multi-host: SIGTERM / SIGINT reach processes one by one (a preemption notice may go to one host
only), and a checkpoint save is collective, so the stop step must be the same on every process.
`AgreedStop` all-reduces each process's pending signal number (max) and its data counts
(records read, records skipped: summed) with one tiny jitted collective per step; every process
sees the same values at the same poll, so all stop at the same step, and the skipped-record
budget (`data.skip_budget`) is judged on the counts of the whole run, never on one host's. Orbax 0.12's `CheckpointManager.reached_preemption` builds on JAX's preemption sync
manager instead, which hooks SIGTERM in C++ below Python's signal handlers (and knows no
SIGINT); the explicit all-reduce keeps one mechanism for both signals and for one process.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P



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


class SigtermFlag:
    """Context manager: while active, SIGTERM (and SIGINT when `sigint=True`) sets
    `.requested` instead of killing the process, so the trainer can save and exit at the
    next step boundary; the previous handlers are restored on exit. A second SIGINT while a
    request is pending raises KeyboardInterrupt (Ctrl-C twice still stops a stuck run).

    `.signum` is the first signal received (0 before any): the trainer exits 128 + signum.

    Python only installs signal handlers from the main thread: elsewhere this is a no-op
    and `.requested` stays False. Each process sees only its own signals; multi-host
    trainers agree on the stop step first (`train.stopping.AgreedStop`) before saving.
    """

    def __init__(self, *, sigint: bool = False):
        self.requested = False
        self.signum = 0
        self._signals = (signal.SIGTERM,) + ((signal.SIGINT,) if sigint else ())
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        self.signum = self.signum or int(signum)
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            # None = installed from C, not Python: SIG_DFL is the best restoration available.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
        return False


@dataclasses.dataclass(frozen=True)
class Agreement:
    """What every process sees at one poll: the signal to stop for (0 = none) and the records
    read / skipped by all processes so far."""

    signum: int
    read: int
    skipped: int


class AgreedStop:
    """SIGTERM (and SIGINT = Ctrl-C with `sigint=True`) requests that every process of the run
    acts on at the same step; a context manager around the loop (it installs `SigtermFlag`).

    `poll(read=, skipped=)` is called once per step by every process, at the same point of the
    loop, with this process's cumulative data counts, and returns an `Agreement`: signum 0 (go
    on) or the signal to stop for (save a checkpoint, exit 128 + signum), and the counts summed
    over processes.
    * One process: the local values, read at the call (no collective).
    * Several processes: each poll submits [signal, read, skipped] from this process to a
      jitted reduction over a [device_count, 3] array (one row per device, on `mesh`; the
      counts in one row per process) and returns the result of the previous poll: the same on
      every process at the same poll, so all stop at the same step, one step after the signal
      reached any process. `wait=True` (called by every process at the same step, e.g. the
      last) returns this poll's own result instead. SIGTERM (15) wins over SIGINT (2) when both
      arrived. A second Ctrl-C raises KeyboardInterrupt at once on the process that got it
      (`SigtermFlag`).
    """

    def __init__(self, mesh: jax.sharding.Mesh, *, sigint: bool = True):
        self.flag = SigtermFlag(sigint=sigint)
        self._mesh = mesh
        self._pending = None
        self._multi = jax.process_count() > 1
        if self._multi:
            self._sharding = NamedSharding(mesh, P(tuple(mesh.axis_names)))
            self._reduce = jax.jit(_reduce_rows, out_shardings=NamedSharding(mesh, P()))

    def __enter__(self) -> "AgreedStop":
        self.flag.__enter__()
        return self

    def __exit__(self, *exc):
        return self.flag.__exit__(*exc)

    def _submit(self, row: np.ndarray) -> jax.Array:
        devices = self._sharding.addressable_devices_indices_map((self._mesh.size, 3))
        first = min(devices, key=lambda d: d.id)  # this process's counts enter the sum once
        local = [jax.device_put((row if d == first else row * [1, 0, 0])[None], d) for d in devices]
        values = jax.make_array_from_single_device_arrays((self._mesh.size, 3), self._sharding, local)
        return self._reduce(values)

    def poll(self, *, read: int = 0, skipped: int = 0, wait: bool = False) -> Agreement:
        """What every process stops for and counts at this step (see the class doc)."""
        row = np.asarray([self.flag.signum, read, skipped], np.int32)
        if not self._multi:
            return Agreement(*map(int, row))
        previous, self._pending = self._pending, self._submit(row)
        if wait:
            current, self._pending = jax.device_get(self._pending), None
            return Agreement(*map(int, current))
        if previous is None:
            return Agreement(0, 0, 0)
        return Agreement(*map(int, jax.device_get(previous)))


def _reduce_rows(rows: jax.Array) -> jax.Array:
    """[devices, 3] (signal, read, skipped) -> [3]: the largest signal, the summed counts."""
    return jnp.concatenate([rows[:, :1].max(axis=0), rows[:, 1:].sum(axis=0)])
