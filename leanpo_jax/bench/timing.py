"""Timing and memory helpers shared by the benchmarks (JAX side), and the matmul peak.

A benchmark row's time is the median over `steps` timed calls after `warmup` untimed ones,
each call synchronised (block_until_ready) so the time is device time plus dispatch.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp


def median_time(fn: Callable[[], object], *, steps: int, warmup: int) -> Tuple[float, list]:
    """-> (median seconds, all timed seconds) of `fn()` made synchronous."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(max(1, steps)):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def peak_bytes(compiled=None) -> Tuple[Optional[int], str]:
    """Peak device memory: the allocator's peak_bytes_in_use where the backend reports it
    (GPU/TPU), else XLA's static estimate for `compiled` (arguments + outputs + temporaries −
    aliased), else None. -> (bytes, source)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "allocator"
    est = peak_bytes_of(compiled) if compiled is not None else None
    return (est, "xla_estimate") if est is not None else (None, "unavailable")


def peak_bytes_of(compiled) -> Optional[int]:
    """XLA's static estimate for `compiled`: arguments + outputs + temporaries − aliased (None
    where the backend has no memory analysis)."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)
    except Exception:  # noqa: BLE001 - some backends have no memory analysis
        return None


def matmul_peak_tflops(*, size: int, dtype: str, reps: int = 10) -> float:
    """Dense matmul throughput measured now on device 0: 2·n³ FLOPs per n×n @ n×n, the median
    of `reps` timed chains of 4 matmuls (the MFU denominator of this run)."""
    key = jax.random.key(0)
    a = jax.random.normal(key, (size, size), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), jnp.float32).astype(dtype)

    @jax.jit
    def chain(a, b):
        # Four dependent products so one dispatch covers enough work to time.
        for _ in range(4):
            a = (a @ b) * jnp.asarray(1e-3, a.dtype)
        return a

    seconds, _ = median_time(lambda: chain(a, b), steps=reps, warmup=2)
    return 4 * 2 * size**3 / seconds / 1e12


def device_info() -> dict:
    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind, "num_devices": jax.device_count(),
            "jax": jax.__version__}


def resolve_attention(name):
    """--attention: "auto" -> cudnn on GPU, else None (XLA's choice); other names pass through."""
    if name in (None, "", "auto"):
        return "cudnn" if jax.devices()[0].platform == "gpu" else None
    return name
