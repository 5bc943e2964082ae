"""train.stopping: the skip limit read one step late yet exact; stop requests by signal
(single process here; two processes in tests/train/test_trainer.py)."""

import os
import signal
import time

import jax
import jax.numpy as jnp
import pytest

from leanpo_jax.train import mesh as mesh_lib
from leanpo_jax.train import stopping


def _fetch_log(monkeypatch):
    """Records which values stopping.SkipLimit fetches from the device, in order."""
    fetched = []
    real = jax.device_get

    def device_get(x):
        fetched.append(int(real(x)))
        return real(x)

    monkeypatch.setattr(stopping.jax, "device_get", device_get)
    return fetched


def test_skip_limit_is_exact_and_reads_the_current_step_only_near_the_limit(monkeypatch):
    fetched = _fetch_log(monkeypatch)
    limit = stopping.SkipLimit(3)
    counts = [0, 1, 0, 1, 2, 3]  # consecutive skips per step; 3 reached at the last step
    got = [limit.check(jnp.int32(c)) for c in counts]
    assert got == [None] * 5 + [3]
    # Steps 1-4 are fetched one call late; step 5 (count 2 = limit - 1, fetched late at step 6)
    # put step 6 on the verge, so step 6 is fetched in its own call.
    assert fetched == [0, 1, 0, 1, 2, 3]
    fetched.clear()
    limit = stopping.SkipLimit(3)
    assert [limit.check(jnp.int32(0)) for _ in range(4)] == [None] * 4
    assert fetched == [0, 0, 0]  # the 4th step's count is still unread: nothing blocked on it


def test_skip_limit_resumed_on_the_verge_reads_at_once():
    limit = stopping.SkipLimit(2, consecutive=1)
    assert limit.check(jnp.int32(2)) == 2
    assert stopping.SkipLimit(1).check(jnp.int32(1)) == 1


def _wait(predicate):
    for _ in range(200):  # Python runs handlers between bytecodes of the main thread
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_one_process_stops_for_the_first_signal_and_a_second_ctrl_c_aborts(sig):
    mesh = mesh_lib.mesh_from_config({"mesh": mesh_lib.mesh_config()})
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stopping.AgreedStop(mesh) as stop:
        assert stop.poll() == stopping.Agreement(0, 0, 0)
        os.kill(os.getpid(), sig)
        assert _wait(lambda: stop.flag.requested)
        assert stop.poll(read=4, skipped=1) == stopping.Agreement(int(sig), 4, 1)
        assert stopping.signal_name(stop.poll().signum) == sig.name
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            _wait(lambda: False)
        assert stop.poll().signum == int(sig)  # the first signal decides the exit code
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
