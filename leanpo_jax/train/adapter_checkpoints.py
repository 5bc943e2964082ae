"""LoRA runs checkpoint their adapters only: the frozen base is referenced, never stored.

A LoRA TrainState's frozen params are the whole base model (for a 7B Video-LLM ~15 GB in bf16),
identical at every step and rebuilt from the run's source (`model.init_from`, or the preset and
seed) on resume. So a LoRA run saves the state without `params["frozen"]` (adapters, optimizer,
step, rng; the data state and meta as always) plus `base_fingerprint`, a sha256 over what the
base is (an HF folder's config.json bytes and its files' names and sizes; a random init's seed
and config), and a resume refuses a checkpoint whose base fingerprint differs from the one it
rebuilt. Full fine-tuning keeps saving the whole state (unchanged).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

from leanpo_jax.models.lora import lora_of

FINGERPRINT_KEY = "base_fingerprint"


def adapters_only(model_def) -> bool:
    return lora_of(model_def.config) is not None


def saved_part(state, model_def):
    """What a checkpoint stores of `state` (its abstract twin for a restore target)."""
    if not adapters_only(model_def):
        return state
    return state.replace(params={"trainable": state.params["trainable"]})


def with_frozen(restored, fresh_state, model_def):
    """The full state: `restored` (saved_part) with the fresh state's frozen base."""
    if not adapters_only(model_def):
        return restored
    return restored.replace(params={"trainable": restored.params["trainable"],
                                    "frozen": fresh_state.params["frozen"]})


def base_fingerprint(folder: Optional[str], seed: int, config) -> str:
    """sha256 of what the frozen base is (module docstring)."""
    h = hashlib.sha256()
    if folder:
        with open(os.path.join(folder, "config.json"), "rb") as f:
            h.update(f.read())
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                h.update(json.dumps([name, os.path.getsize(path)]).encode())
    else:
        h.update(json.dumps({"seed": int(seed), "config": repr(config.replace(lora=None))}).encode())
    return h.hexdigest()


def check_base(meta: dict, fingerprint: str, where: str) -> None:
    """Raises when the checkpoint's base (meta) is not the one this run rebuilt."""
    saved = meta.get(FINGERPRINT_KEY)
    if saved is not None and saved != fingerprint:
        raise ValueError(f"{where}: this LoRA checkpoint was trained on another base model "
                         f"({FINGERPRINT_KEY} {saved[:12]}…, now {fingerprint[:12]}…): model.init_from's files or "
                         "the preset/seed changed; point model.init_from at the original base, or start a new workdir")
