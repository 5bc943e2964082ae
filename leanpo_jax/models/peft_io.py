"""LoRA adapters in PEFT's folder format, out and in, and merged into the base weights.

    save_peft_adapter(model, out_dir, base_model_name_or_path=...)   # adapter_config.json + weights
    load_peft_adapter(model, adapter_dir)                              # into a model with adapters
    merge_adapters(model)                                              # W + scale·A·B, adapters gone

Keys: `base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r], <module>
the HF module name the adapter was matched against (lora.py: transformers 5 in-memory names,
e.g. model.language_model.layers.3.self_attn.q_proj; `module_prefix=` writes another naming,
e.g. the 4.x "model." of Qwen2-VL). Our A [in..., r] / B [r, out...] are flattened to PEFT's
matrices (o_proj's input is heads·head_dim). Only layers an adapter is on are written; PEFT
creates the rest from target_modules with B = 0, which changes nothing.
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from leanpo_jax.models import lora as lora_lib
from leanpo_jax.models.safetensors_io import load_file, save_file

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"


def _decoders(model):
    """The LoRA-carrying decoders of `model` (modules with `.lora` and `.layers`)."""
    found = lora_lib.adapted_decoders(model)
    if not found:
        raise ValueError("the model has no LoRA adapters (set model.lora.rank > 0)")
    return found


def _peft_target_modules(model, module_prefix: Optional[str]) -> str:
    """A regex PEFT fullmatches against exactly the adapted modules (leaf names like "gate_proj"
    would also match a vision tower's MLP in PEFT)."""
    parts = []
    for dec in _decoders(model):
        prefix = dec.lora_prefix if module_prefix is None else module_prefix
        by_layers = {}
        for name, (module, _) in lora_lib.PROJECTIONS.items():
            if hasattr(dec.layers, f"{name}_lora_scale"):
                on = tuple(int(i) for i in np.nonzero(np.asarray(getattr(dec.layers, f"{name}_lora_scale")[...]))[0])
                by_layers.setdefault(on, []).append(re.escape(module))
        for layers, modules in sorted(by_layers.items()):
            parts.append(f"{re.escape(prefix)}layers\\.({'|'.join(map(str, layers))})\\.({'|'.join(modules)})")
    return parts[0] if len(parts) == 1 else "|".join(f"(?:{p})" for p in parts)


def adapter_tensors(model, module_prefix: Optional[str] = None) -> dict:
    """{PEFT key: float32 array} of every adapter on an adapted layer."""
    out = {}
    for dec in _decoders(model):
        prefix = dec.lora_prefix if module_prefix is None else module_prefix
        for name, (module, n_in) in lora_lib.PROJECTIONS.items():
            if not hasattr(dec.layers, f"{name}_lora_a"):
                continue
            a = np.asarray(jax.device_get(getattr(dec.layers, f"{name}_lora_a")[...]), np.float32)
            b = np.asarray(jax.device_get(getattr(dec.layers, f"{name}_lora_b")[...]), np.float32)
            scale = np.asarray(jax.device_get(getattr(dec.layers, f"{name}_lora_scale")[...]))
            r = a.shape[-1]
            for i in np.nonzero(scale)[0]:
                key = f"base_model.model.{prefix}layers.{i}.{module}"
                out[f"{key}.lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, r).T)
                out[f"{key}.lora_B.weight"] = np.ascontiguousarray(b[i].reshape(r, -1).T)
    return out


def save_peft_adapter(model, out_dir: str, *, base_model_name_or_path: str = "",
                      module_prefix: Optional[str] = None) -> str:
    """Writes adapter_config.json + adapter_model.safetensors that `peft.PeftModel.from_pretrained`
    loads onto the transformers model of the base checkpoint -> out_dir."""
    cfg = _decoders(model)[0].lora
    os.makedirs(out_dir, exist_ok=True)
    save_file(adapter_tensors(model, module_prefix), os.path.join(out_dir, WEIGHTS_FILE), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(cfg.rank), "lora_alpha": float(cfg.alpha),
              "lora_dropout": float(cfg.dropout), "target_modules": _peft_target_modules(model, module_prefix),
              "bias": "none",
              "use_rslora": bool(cfg.use_rslora), "base_model_name_or_path": base_model_name_or_path,
              "inference_mode": True, "fan_in_fan_out": False, "init_lora_weights": True,
              "modules_to_save": None, "layers_to_transform": None}
    with open(os.path.join(out_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    return out_dir


def read_peft_config(adapter_dir: str) -> lora_lib.LoRAConfig:
    """The LoRAConfig of a PEFT LoRA folder (an error naming the file for anything else)."""
    path = os.path.join(adapter_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{adapter_dir}: no {CONFIG_FILE}; model.lora.init_from must be a PEFT adapter folder")
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    if d.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type {d.get('peft_type')!r}; only LORA adapters load here")
    for key, ok in (("bias", d.get("bias", "none") == "none"), ("fan_in_fan_out", not d.get("fan_in_fan_out")),
                    ("modules_to_save", not d.get("modules_to_save")), ("use_dora", not d.get("use_dora"))):
        if not ok:
            raise ValueError(f"{path}: {key}={d.get(key)!r} is not supported (plain LoRA on linear layers only)")
    target = d.get("target_modules") or ()
    return lora_lib.LoRAConfig(rank=int(d["r"]), alpha=float(d["lora_alpha"]),
                               dropout=float(d.get("lora_dropout", 0.0) or 0.0),
                               use_rslora=bool(d.get("use_rslora", False)),
                               target_modules=target if isinstance(target, str) else tuple(target))


def load_peft_adapter(model, adapter_dir: str, module_prefix: Optional[str] = None) -> None:
    """Sets the adapters of `model` (built with the folder's LoRA config: `read_peft_config`)
    from adapter_model.safetensors; a tensor the model has no adapter for, or an adapter of a
    layer the file lacks, is an error naming the key."""
    tensors = load_file(os.path.join(adapter_dir, WEIGHTS_FILE))
    left = set(tensors)
    for dec in _decoders(model):
        prefix = dec.lora_prefix if module_prefix is None else module_prefix
        for name, (module, _) in lora_lib.PROJECTIONS.items():
            if not hasattr(dec.layers, f"{name}_lora_a"):
                continue
            a_var, b_var = getattr(dec.layers, f"{name}_lora_a"), getattr(dec.layers, f"{name}_lora_b")
            a, b = np.array(a_var[...]), np.array(b_var[...])
            scale = np.asarray(getattr(dec.layers, f"{name}_lora_scale")[...])
            for i in np.nonzero(scale)[0]:
                key = f"base_model.model.{prefix}layers.{i}.{module}"
                for part, dst in (("lora_A", a), ("lora_B", b)):
                    full = f"{key}.{part}.weight"
                    if full not in tensors:
                        raise KeyError(f"{adapter_dir}/{WEIGHTS_FILE}: no {full} for an adapted layer")
                    left.discard(full)
                value = np.asarray(tensors[f"{key}.lora_A.weight"], np.float32).T  # [in, r]
                a[i] = value.reshape(a.shape[1:])
                b[i] = np.asarray(tensors[f"{key}.lora_B.weight"], np.float32).T.reshape(b.shape[1:])
            a_var.set_value(jnp.asarray(a))
            b_var.set_value(jnp.asarray(b))
    if left:
        raise KeyError(f"{adapter_dir}/{WEIGHTS_FILE}: {len(left)} tensors match no adapter of this model "
                       f"(other target_modules or module names?), e.g. {sorted(left)[:3]}")


def merge_adapters(model) -> None:
    """Folds every adapter into its base kernel (W + scale·A·B, in W's dtype) and removes the
    adapters: the model then computes what the adapted one did, without LoRA."""
    for dec in _decoders(model):
        for name in lora_lib.PROJECTIONS:
            if not hasattr(dec.layers, f"{name}_lora_a"):
                continue
            kernel = getattr(dec.layers, name)
            kernel.set_value(lora_lib.merged_kernel(kernel[...], getattr(dec.layers, f"{name}_lora_a")[...],
                                                    getattr(dec.layers, f"{name}_lora_b")[...],
                                                    getattr(dec.layers, f"{name}_lora_scale")[...]))
            for part in ("a", "b", "scale"):
                delattr(dec.layers, f"{name}_lora_{part}")
        dec.lora = None
