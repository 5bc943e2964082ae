"""Per-process JSON states (each host's data-iterator position and counts) in one checkpoint item.

    saved = gather(pipeline.get_state())     # every process calls it (a collective), before saving
    pipeline.set_state(select(saved))        # on resume: this process's own entry

Orbax writes a JSON item from the primary process only, so a plain `data_state` would give
every host process 0's iterator state on resume (its shard, its counts, its process_index
fingerprint: the pipeline refuses it). `gather` all-gathers the states into
{"process_count": N, "processes": [state_0, ..., state_{N-1}]}; on one process it returns the
state itself, so single-process checkpoints keep their format and old ones stay readable.
"""

from __future__ import annotations

import json
from typing import Any, Dict

import jax
import numpy as np
from jax.experimental import multihost_utils


def gather(state: Dict[str, Any]) -> Dict[str, Any]:
    """Every process's `state` (JSON-serialisable) in one dict; must be called by all processes."""
    if jax.process_count() == 1:
        return state
    data = np.frombuffer(json.dumps(state, sort_keys=True).encode("utf-8"), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.int32(data.size))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded))  # [process_count, max length]
    states = [json.loads(bytes(row[:n]).decode("utf-8")) for row, n in zip(rows, lengths)]
    return {"process_count": len(states), "processes": states}


def select(saved: Dict[str, Any]) -> Dict[str, Any]:
    """This process's state from what `gather` saved (a single-process state is returned as is).

    Raises ValueError when the checkpoint was written by a different number of processes.
    """
    if "processes" not in saved:
        return saved
    count = int(saved["process_count"])
    if count != jax.process_count():
        raise ValueError(
            f"the checkpoint's data state was written by {count} processes, this run has "
            f"{jax.process_count()}: resume with distributed.num_processes={count}")
    return saved["processes"][jax.process_index()]
