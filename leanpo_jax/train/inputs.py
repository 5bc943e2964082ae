"""What the trainer feeds the step: data files resolved, pipelines built, host batches adapted.

With no data file configured and `data.synthetic > 0` (the tiny config), the synthetic shapes
corpus is generated once into WORKDIR/synthetic (train_{pairs,triplets}.jsonl + heldout_{pairs,triplets}.jsonl) by process 0,
and the eval / probe files default to the held-out split.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

import ml_collections
import numpy as np

SYNTHETIC_DIR = "synthetic"
HELDOUT_RECORDS = 8


def _barrier(name: str) -> None:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def ensure_synthetic(config: ml_collections.ConfigDict, workdir: str) -> Optional[str]:
    """Generates the synthetic corpus when no data file is set -> its folder (None otherwise)."""
    data = config.data
    if data.pairs or data.triplets or int(data.get("synthetic", 0)) <= 0:
        return None
    import jax

    folder = os.path.join(workdir, SYNTHETIC_DIR)
    done = os.path.join(folder, "COMPLETE")
    if jax.process_index() == 0 and not os.path.exists(done):
        from leanpo_jax.data import synthetic  # PyAV: only when videos are written

        num = int(data.synthetic)
        info = synthetic.generate(folder, num + HELDOUT_RECORDS, seed=int(config.seed),
                                  num_frames_video=max(8, int(data.num_frames)), size=32)
        for kind in ("pairs", "triplets"):
            with open(info[kind], encoding="utf-8") as f:
                rows = f.readlines()
            with open(os.path.join(folder, f"train_{kind}.jsonl"), "w", encoding="utf-8") as f:
                f.writelines(rows[:num])
            with open(os.path.join(folder, f"heldout_{kind}.jsonl"), "w", encoding="utf-8") as f:
                f.writelines(rows[num:])
        # Written last: its presence says the folder is complete (a crash mid-way regenerates).
        with open(done, "w", encoding="utf-8") as f:
            json.dump({k: v for k, v in info.items() if k != "questions"}, f)
    _barrier("leanpo_jax_synthetic")
    return folder


def training_data(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """The data block the training pipeline reads: path and kind resolved (pairs or triplets)."""
    data = ml_collections.ConfigDict(config.data.to_dict())
    folder = ensure_synthetic(config, workdir)
    sft = config.loss.name == "sft"
    if folder:
        kind = "triplets" if sft else "pairs"
        data.pairs = os.path.join(folder, f"train_{kind}.jsonl")
        data.kind = kind
    elif data.triplets:
        data.pairs, data.kind = data.triplets, "triplets"
    if not data.pairs:
        raise ValueError("no training data: set --config.data.pairs=FILE (or data.triplets with "
                         "loss.name=sft, or data.synthetic=N to generate a synthetic corpus)")
    if not os.path.exists(data.pairs):
        raise FileNotFoundError(f"data file {data.pairs!r} (config data.pairs / data.triplets) "
                                "does not exist")
    if not data.video_root:
        data.video_root = os.path.dirname(os.path.abspath(data.pairs))
    return data


def side_data(config: ml_collections.ConfigDict, workdir: str, which: str) -> Optional[ml_collections.ConfigDict]:
    """Data block of the `eval` or `probe` pairs file (None when not configured): file order,
    the training data's other keys; the synthetic held-out split when training is synthetic."""
    path = config[which].pairs
    folder = os.path.join(workdir, SYNTHETIC_DIR)
    if not path and not (config.data.pairs or config.data.triplets) and int(config.data.get("synthetic", 0)) > 0:
        path = os.path.join(folder, "heldout_pairs.jsonl")
    if not path:
        return None
    data = ml_collections.ConfigDict(config.data.to_dict())
    data.pairs, data.kind, data.triplets = path, "pairs", ""
    if not config[which].pairs or not data.video_root:
        data.video_root = os.path.dirname(os.path.abspath(path))
    data.num_workers = 0
    return data


def adapt_batch(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Pipeline batch -> step batch: triplet answers become the `chosen` response (SFT)."""
    batch = dict(batch)
    if "answer_ids" in batch:
        batch["chosen_ids"] = batch.pop("answer_ids")
        batch["chosen_mask"] = batch.pop("answer_mask")
    return batch


def batch_tokens(batch: Dict[str, np.ndarray]) -> int:
    """Tokens a pair-at-a-time trainer would process for the real rows: Σ over responses of
    (prompt length + response length), as the PyTorch peer counts them."""
    real = np.asarray(batch["pair_weight"]) > 0
    lengths = np.asarray(batch["prompt_lengths"])[real]
    total = 0
    for name in ("chosen", "rejected"):
        if f"{name}_mask" in batch:
            total += int(lengths.sum() + np.asarray(batch[f"{name}_mask"])[real].sum())
    return total


def write_json(path: str, payload: Dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)
