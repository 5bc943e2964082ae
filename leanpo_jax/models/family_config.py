"""What every family's config carries besides its shapes, and small rules their parsers share.

`RuntimeFields` is the base dataclass of each family config: compute / parameter dtypes, the
attention implementation ("xla", "cudnn" or None = JAX picks), per-layer remat and the LoRA
adapters (`lora`). They are
choices of a run, not properties of the weights: config.json never records them
(`RUNTIME_FIELDS`), so a load picks its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

from leanpo_jax.models.lora import LoRAConfig


@dataclasses.dataclass(frozen=True)
class RuntimeFields:
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: Optional[str] = None
    remat: bool = False
    lora: Optional[LoRAConfig] = None  # adapters on the language model (models/lora.py); None = none

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


RUNTIME_FIELDS = tuple(f.name for f in dataclasses.fields(RuntimeFields))


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; expected one of {tuple(choices)}")


def vision_layers_run(full: int, feature_layer, where: str) -> int:
    """Encoder layers a LLaVA-style feature layer runs: hidden_states has full + 1 entries
    (entry 0: the embeddings), so a negative index -k runs full + 1 - k, a positive one itself."""
    if not isinstance(feature_layer, int):
        raise ValueError(f"{where}: vision feature layer {feature_layer!r}: only one layer is supported")
    used = feature_layer if feature_layer >= 0 else full + 1 + feature_layer
    if not 1 <= used <= full:
        raise ValueError(f"{where}: vision feature layer {feature_layer} selects none of {full} layers")
    return used


def local_tower_config(tower: str, base_dir: Optional[str]) -> Optional[dict]:
    """The vision config dict of an lmms-lab `mm_vision_tower` that names a local folder
    (absolute, or relative to the checkpoint `base_dir`); None when it names none."""
    for folder in (tower, os.path.join(base_dir or "", tower)):
        if tower and os.path.isfile(os.path.join(folder, "config.json")):
            with open(os.path.join(folder, "config.json")) as f:
                d = json.load(f)
            return d.get("vision_config", d)
    return None
