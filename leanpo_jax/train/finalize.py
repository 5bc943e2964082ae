"""A run's final artifacts, written so that an interrupted finish is completed by a rerun.

    export_hf(params, model_def, param_dtypes, mesh, out, tokenizer=..., video_token_index=...)
    missing_artifacts(workdir, step, export=True)   # [] when the run at `step` is finished

The final artifacts of a run that reached step N: WORKDIR/training_curves.png, the HF export
(WORKDIR/hf, when checkpoint.export_hf) and, written last, WORKDIR/train_summary.json with
"step": N. An export is built in `<out>.partial` and renamed into place, with a marker
(`EXPORT_MARKER`, holding the step) inside, so `<out>` is either complete or absent: a kill
mid-export leaves no half folder that looks finished. A rerun at N finishes whatever is missing
(idempotent); `python -m leanpo_jax.export` exports any checkpoint the same way.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional

import jax
from jax.sharding import NamedSharding, PartitionSpec

from leanpo_jax.data.tokenize import save_tokenizer_files
from leanpo_jax.models import save_hf
from leanpo_jax.models.lora import lora_of
from leanpo_jax.models.peft_io import merge_adapters, save_peft_adapter
from leanpo_jax.train import metrics_log
from leanpo_jax.train import state as state_lib

SUMMARY_FILENAME = "train_summary.json"
HF_DIRNAME = "hf"
EXPORT_MARKER = "leanpo_export.json"
LORA_ADAPTER_DIR = "lora_adapter"  # inside the exported HF folder: the PEFT adapter of a LoRA run


def export_step(folder: str) -> Optional[int]:
    """The checkpoint step a complete export folder holds (None: absent or incomplete)."""
    try:
        with open(os.path.join(folder, EXPORT_MARKER), encoding="utf-8") as f:
            return int(json.load(f)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_summary(workdir: str) -> Optional[Dict]:
    try:
        with open(os.path.join(workdir, SUMMARY_FILENAME), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def missing_artifacts(workdir: str, step: int, *, export: bool) -> List[str]:
    """Which final artifacts of the run at `step` are not there (names as in the module doc)."""
    missing = []
    if not os.path.exists(os.path.join(workdir, metrics_log.PLOT_FILENAME)):
        missing.append(metrics_log.PLOT_FILENAME)
    if export and export_step(os.path.join(workdir, HF_DIRNAME)) != step:
        missing.append(HF_DIRNAME)
    summary = read_summary(workdir)
    if summary is None or summary.get("step") != step:
        missing.append(SUMMARY_FILENAME)
    return missing


def export_hf(params: Dict, model_def: state_lib.ModelDef, param_dtypes, mesh, out: str, *, step: int,
              tokenizer, video_token_index: Optional[int], source: str) -> str:
    """Writes the model of `params` ({"trainable", "frozen"}, trainable cast back to
    `param_dtypes`) as an HF folder at `out`, atomically (module doc) -> `out`.

    Every process must call it (the parameters are gathered with a collective); process 0
    writes. The folder holds the weights and configs (`save_hf`, with the placeholder's text in
    the tokenizer as the video token, so config and tokenizer agree when loaded again) and the
    training tokenizer's files, so transformers' AutoTokenizer / processor load it as is. A LoRA
    run writes the adapters as a PEFT folder `out`/lora_adapter (for the base it started from)
    and the weights merged (W + scale·A·B), so `out` loads as a plain model too.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    with jax.set_mesh(mesh):
        params = jax.jit(lambda p: p, out_shardings=replicated)(params)
    if jax.process_index() != 0:
        return out
    trainable = jax.tree.map(lambda x, d: x.astype(d), params["trainable"], param_dtypes)
    model = state_lib.merge_model(model_def, trainable, params["frozen"])
    partial = out.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    token = None if video_token_index is None else tokenizer.tokenizer.id_to_token(video_token_index)
    if lora_of(model_def.config) is not None:
        save_peft_adapter(model, os.path.join(partial, LORA_ADAPTER_DIR), base_model_name_or_path=source)
        merge_adapters(model)
    save_hf(model, partial, **({} if token is None else {"video_token": token}))
    save_tokenizer_files(tokenizer.where, partial)
    with open(os.path.join(partial, EXPORT_MARKER), "w", encoding="utf-8") as f:
        json.dump({"step": int(step), "source": source}, f)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return out
