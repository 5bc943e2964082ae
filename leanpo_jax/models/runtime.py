"""From a config's `model` block to the model to run: the source plus its runtime settings.

    source = model_source(config.model, platform)      # ModelSource (registry.py)
    interface = data_interface(source, config.data)    # frames, template, tokenizer
    model = source.load() if source.folder else source.build(seed)

Runtime settings are not properties of the weights: the compute dtype ("auto": bfloat16 on
accelerators, float32 on CPU), the attention kernel ("auto": cuDNN on GPU, XLA elsewhere),
per-layer remat, LoRA adapters (`model.lora.*`), and for presets only an override of the
vocabulary rows. With
`model.init_from` the checkpoint decides everything else (family, shapes, vocabulary).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from leanpo_jax.data.chat_template import with_chat_template
from leanpo_jax.data.contract import ModelInterface
from leanpo_jax.models.lora import LoRAConfig
from leanpo_jax.models.registry import ModelSource, resolve_model

_REGEX_CHARS = set("^$*+?()[]|\\")


def lora_config(block) -> Optional[LoRAConfig]:
    """model.lora as a LoRAConfig (None when absent or rank 0). target_modules: "" = every
    linear layer, "a,b" = module names, a string with regex characters = a regex. With
    model.lora.init_from, the adapter folder's own r / alpha / targets (model.lora.rank 0 or
    equal to it) and this run's model.lora.dropout (a training setting, not the file's)."""
    if block is None:
        return None
    if block.get("init_from"):
        from leanpo_jax.models.peft_io import read_peft_config  # pylint: disable=import-outside-toplevel

        cfg = read_peft_config(block.init_from)
        if int(block.get("rank", 0)) not in (0, cfg.rank):
            raise ValueError(f"config model.lora.rank={block.rank} but the adapter at model.lora.init_from="
                             f"{block.init_from!r} has r={cfg.rank}: set model.lora.rank to 0 or {cfg.rank}")
        return dataclasses.replace(cfg, dropout=float(block.get("dropout", 0.0)))
    if not int(block.get("rank", 0)):
        return None
    target = str(block.get("target_modules", "") or "")
    if not any(ch in _REGEX_CHARS for ch in target):
        target = tuple(t.strip() for t in target.split(",") if t.strip())
    return LoRAConfig(rank=int(block.rank), alpha=float(block.alpha), dropout=float(block.dropout),
                      use_rslora=bool(block.use_rslora), target_modules=target)


def compute_dtype(value: str, platform: str) -> str:
    """model.dtype with "auto" resolved: bfloat16 on accelerators, float32 on CPU."""
    if value != "auto":
        return value
    return "float32" if platform == "cpu" else "bfloat16"


def attention_impl(value: Optional[str], platform: str) -> Optional[str]:
    """model.attention_impl with "auto" resolved: cuDNN on GPU, XLA elsewhere."""
    if value in ("auto", None):
        return "cudnn" if platform == "gpu" else "xla"
    return value


def model_source(model_block, platform: str) -> ModelSource:
    """The ModelSource of a `model` config block (preset / init_from / dtype / attention_impl /
    remat / vocab_size) on `platform`."""
    source = resolve_model(model_block.preset, model_block.init_from)
    vocab = int(model_block.get("vocab_size", 0) or 0)
    if vocab:
        if source.folder is not None:
            raise ValueError(f"config model.vocab_size={vocab} with model.init_from={source.folder!r}: the "
                             "checkpoint's embedding decides the vocabulary; unset model.vocab_size")
        config = source.config
        source = dataclasses.replace(source, config=config.replace(
            text=dataclasses.replace(config.text, vocab_size=vocab)))
    lora = model_block.get("lora")
    source = source.replace_config(dtype=compute_dtype(model_block.dtype, platform),
                                   attention_impl=attention_impl(model_block.attention_impl, platform),
                                   remat=bool(model_block.remat), lora=lora_config(lora))
    if lora is not None and lora.get("init_from"):
        source = dataclasses.replace(source, adapter=os.path.abspath(lora.init_from))
    return source


def data_interface(source: ModelSource, data_block) -> ModelInterface:
    """What the data side uses for `source`: its family's interface with the chat template
    `data.chat_template` selects ("training" or the checkpoint's own)."""
    return with_chat_template(source.interface(), data_block, source.folder)
