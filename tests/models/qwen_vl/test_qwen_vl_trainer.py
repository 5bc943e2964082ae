"""The trainer on Qwen2.5-VL (tiny, ragged windows, M-RoPE) with video buckets and LoRA: 4 steps
on the synthetic corpus, the export (merged qwen_vl folder + PEFT adapter), then the run cut
back to its step-2 checkpoint resumed to step 4 gives the same losses and, bit for bit, the
same adapters (LoRA checkpoints hold no base weights)."""

import json
import os

import numpy as np

from conftest import cut_back_run, run_cli, saved_arrays

from leanpo_jax.models import resolve_model
from leanpo_jax.train.metrics_log import read_metrics

PRESET = "qwen2.5-vl-tiny"


def _train(workdir):
    return run_cli(["-m", "leanpo_jax.train", "--config", "configs/tiny.py", "--config.logging.progress_bar=False",
                    f"--workdir={workdir}", f"--config.model.preset={PRESET}", "--config.data.tokenizer=",
                    "--config.data.max_prompt_text_tokens=64", "--config.num_steps=4",
                    "--config.data.video_buckets=('84x84','56x112')", "--config.model.lora.rank=4",
                    "--config.model.lora.alpha=8.0", "--config.checkpoint.every=2",
                    "--config.checkpoint.max_to_keep=20"])


def _train_rows(workdir):
    return [r for r in read_metrics(workdir) if "kind" not in r]


def test_lora_trainer_on_qwen25_vl_exports_and_resumes_exactly(tmp_path):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    proc = _train(full)
    assert "done at step 4" in proc.stdout
    rows = _train_rows(full)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)
    saved = saved_arrays(full, 4)
    assert saved and all("frozen" not in k for k in saved)  # adapters, Adam moments, step, rng
    assert any(k.endswith("['q_kernel_lora_b']") and "trainable" in k for k in saved)

    hf = os.path.join(full, "hf")
    exported = resolve_model(init_from=hf)
    assert exported.family.name == "qwen_vl" and exported.config.vision.version == "2.5"
    with open(os.path.join(hf, "lora_adapter", "adapter_config.json")) as f:
        adapter = json.load(f)
    assert (adapter["r"], adapter["lora_alpha"], adapter["peft_type"]) == (4, 8.0, "LORA")

    cut_back_run(full, cut, 2, 4)
    resumed = _train(cut)
    assert "resumed from step 2" in resumed.stdout + resumed.stderr and "done at step 4" in resumed.stdout
    again = _train_rows(cut)
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    for got, want in zip(again[2:], rows[2:]):
        for key in ("loss", "loss/preference", "logps/chosen", "rewards/margins"):
            assert abs(got[key] - want[key]) <= 1e-6 * max(1.0, abs(want[key])), (got["step"], key)
    after = saved_arrays(cut, 4)
    assert after.keys() == saved.keys()
    for key in saved:
        np.testing.assert_array_equal(after[key], saved[key], err_msg=key)
