"""leanpo_jax.bench: the CLI end to end at --size tiny (every mode, with the torch peer), the
peer's objective equal to ours at the same weights, the family's transformers equivalent taking
our checkpoints, the MFU / ratio arithmetic, job grouping, and the import hygiene of the step
path (no grain / av / imageio / torch)."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, run_cli
from leanpo_jax.bench import __main__ as bench_main
from leanpo_jax.bench.shapes import TINY_STEP_SHAPES, FULL_STEP_SHAPES

# The CLI run below takes one video shape (--only NAME keeps the names containing NAME) to stay
# short: the other tiny shapes' rows run in test_peer_objective_equals_ours_at_the_same_weights.
CLI_ONLY = "tiny-video 4f"
CLI_SHAPES = [s for s in TINY_STEP_SHAPES if CLI_ONLY in s.name]


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bench") / "rows.json")
    proc = run_cli(["-m", "leanpo_jax.bench", "--what", "all", "--size", "tiny", "--peer", "torch",
                    "--only", CLI_ONLY, "--json", out], timeout=600)
    return json.load(open(out))["rows"], proc.stdout


def test_tiny_run_reports_every_mode_with_consistent_numbers(tiny_rows):
    rows, stdout = tiny_rows
    assert all("error" not in r for r in rows), [r for r in rows if "error" in r]
    peak = [r for r in rows if r["what"] == "peak"]
    assert len(peak) == 1 and peak[0]["peak_tflops"] > 0
    assert len(CLI_SHAPES) == 1
    for shape in CLI_SHAPES:
        got = {(r["layout"], r["impl"]): r for r in rows if r["what"] == "step" and r["name"] == shape.name}
        assert set(got) == {("shared", "leanpo_jax"), ("naive", "leanpo_jax"), ("naive", "torch-hf")}
        for r in got.values():
            assert r["step_s"] > 0 and math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"])
            assert r["tokens_per_s"] == pytest.approx(2 * shape.pairs * shape.seq_len() / r["step_s"])
            assert r["pairs_per_s"] == pytest.approx(shape.pairs / r["step_s"])
            assert r["mfu"] == pytest.approx(r["model_flops"] / r["step_s"] / (peak[0]["peak_tflops"] * 1e12))
            assert r["seq"] == shape.seq_len() and r["compile_s"] >= 0
        # The shared layout counts the prompt once: fewer model FLOPs than naive, same tokens.
        assert got[("shared", "leanpo_jax")]["model_flops"] < got[("naive", "leanpo_jax")]["model_flops"]
        ours = got[("shared", "leanpo_jax")]
        assert ours["vs_peer"]["torch-hf"] == pytest.approx(ours["tokens_per_s"] / got[("naive", "torch-hf")]["tokens_per_s"])
        assert ours["peak_bytes"] > 0  # XLA's estimate on CPU
    phases = {r["phase"]: r for r in rows if r["what"] == "generate"}
    assert set(phases) == {"encode", "prefill", "decode"}
    assert phases["decode"]["decoded_tokens"] == 2 * 2 * 8  # batch x samples x new tokens, no stop ids
    assert phases["prefill"]["tokens_per_s"] > 0 and phases["encode"]["frames_per_s"] > 0
    data = [r for r in rows if r["what"] == "data"]
    assert len(data) == 1 and data[0]["records_per_s"] > 0
    assert data[0]["frames_per_s"] == pytest.approx(4 * data[0]["records_per_s"])
    for needle in ("tiny-video 4f", "torch-hf", "records/s", "[decode]", "TFLOP/s"):
        assert needle in stdout


@pytest.mark.parametrize("shape", [s for s in TINY_STEP_SHAPES if s.name in ("tiny-text 2x64", "tiny-video 4f", "tiny-next-video 4f", "tiny-qwen2.5-vl 4f", "tiny-qwen2.5-vl 4f lora4")],
                         ids=lambda s: s.name)
def test_peer_objective_equals_ours_at_the_same_weights(shape, tmp_path):
    """The peer's first-step loss (HF transformers, TRL-style concatenated batch, video
    duplicated) equals our train step's on the same weights: both run one objective."""
    from leanpo_jax.bench.step_bench import run_step
    from leanpo_jax.bench.torch_peer import run_peer
    from leanpo_jax.models import save_hf
    from leanpo_jax.models import build_model

    save_hf(build_model(shape.config(), seed=0), str(tmp_path))  # run_step builds this same model
    ours = run_step(shape, "shared", dtype="float32", attention=None, steps=1, warmup=0)
    peer = run_peer(shape, "torch-hf", steps=1, warmup=0, hf_dir=str(tmp_path))
    assert peer["loss_first"] == pytest.approx(ours["loss_first"], rel=1e-5, abs=1e-5)
    assert peer["trainable_params"] == ours["trainable_params"]
    if shape.lora_rank:  # peft adapts the same modules: r (in + out) per linear layer of the LM
        text = shape.config().text
        q, kv = text.num_heads * text.resolved_head_dim, text.num_kv_heads * text.resolved_head_dim
        per_layer = sum(i + o for i, o in [(text.hidden_size, q), (text.hidden_size, kv), (text.hidden_size, kv),
                                           (q, text.hidden_size), (text.hidden_size, text.intermediate_size),
                                           (text.hidden_size, text.intermediate_size),
                                           (text.intermediate_size, text.hidden_size)])
        assert ours["trainable_params"] == shape.lora_rank * per_layer * text.num_layers
        # Compile-only (abstract shapes, nothing allocated or run): the same program, so the
        # same trainable count and (within 1%: concrete inputs differ in layout details) the
        # same XLA estimate on this backend.
        abstract = run_step(shape, "shared", dtype="float32", attention=None, steps=1, warmup=0, compile_only=True)
        assert abstract["trainable_params"] == ours["trainable_params"] and abstract["step_s"] is None
        assert ours["peak_source"] == abstract["peak_source"] == "xla_estimate"
        assert abstract["peak_bytes"] == pytest.approx(ours["peak_bytes"], rel=0.01) and ours["peak_bytes"] > 0
        assert ours["loss_first"] == pytest.approx(run_step(dataclasses.replace(shape, lora_rank=0), "shared",
                                                            dtype="float32", attention=None, steps=1,
                                                            warmup=0)["loss_first"], abs=1e-6)


def test_transformers_model_takes_our_checkpoint_and_names_what_it_lacks(tmp_path):
    """The family's transformers equivalent (the peer's architecture) of the tiny preset loads
    every tensor save_hf writes, none missing or left over; no equivalent is an error naming why."""
    import torch

    from leanpo_jax.bench.torch_peer import _hf_model, peer_supported
    from leanpo_jax.models import Family, build_model, family_of, get_preset, save_hf

    config = get_preset("tiny")
    family = family_of(config)
    name, d = family.transformers_model(config)
    assert name == "LlavaOnevisionForConditionalGeneration" and d["model_type"] == "llava_onevision"
    assert "leanpo_jax" not in d and "dtype" not in d
    save_hf(build_model(config, seed=0), str(tmp_path))
    assert type(_hf_model(config, torch.device("cpu"), torch.float32, str(tmp_path))).__name__ == name
    assert family.transformers_model(config.replace(vision=None))[0] == "Qwen2ForCausalLM"
    with pytest.raises(ValueError, match="newline='grid'"):
        family.transformers_model(get_preset("llava-video-qwen2-7b"))
    video_7b = next(s for s in FULL_STEP_SHAPES if s.model == "llava-video-qwen2-7b-8L")
    assert "newline='grid'" in peer_supported(video_7b)
    with pytest.raises(NotImplementedError, match="llava_onevision"):
        Family.transformers_model(family, config)  # the default of a family that names none


def test_mfu_ratios_and_process_groups():
    rows = [dict(what="peak", name="m", impl="leanpo_jax", layout="-", peak_tflops=100.0),
            dict(what="step", name="s", layout="shared", impl="leanpo_jax", step_s=0.5, tokens_per_s=300.0,
                 model_flops=20e12),
            dict(what="step", name="s", layout="naive", impl="torch-hf", step_s=1.0, tokens_per_s=100.0,
                 model_flops=40e12),
            dict(what="step", name="s", layout="naive", impl="torch-liger", step_s=1.0, tokens_per_s=150.0,
                 model_flops=40e12)]
    bench_main.finish(rows)
    assert rows[1]["mfu"] == pytest.approx(0.4) and rows[2]["mfu"] == pytest.approx(0.4)
    assert rows[1]["vs_peer"] == {"torch-hf": pytest.approx(3.0), "torch-liger": pytest.approx(2.0)}
    assert rows[1]["vs_best_peer"] == pytest.approx(2.0)

    only = [a for o in ("llava-ov", "llava-video") for a in ("--only", o)]
    args = bench_main.parse_args(["--what", "all", "--peer", "torch", *only])
    jobs = bench_main.plan(args)
    names = {j["shape"]["name"] for j in jobs if "shape" in j and j["kind"] in ("step", "peer")}
    assert names == {s.name for s in FULL_STEP_SHAPES if "llava-ov" in s.name or "llava-video" in s.name}
    assert len(names) == 4  # with the 28-layer LLaVA-Video-7B LoRA fit row
    # No peer for the grid-newline LLaVA-Video preset (transformers' class cannot express it).
    assert not [j for j in jobs if j["kind"] == "peer" and "llava-video" in j["shape"]["name"]]
    grouped = bench_main.groups(jobs, isolate=True)
    assert all(len(g) == 1 for g in grouped if g[0]["kind"] != "peer")
    kinds = [g[0]["kind"] for g in grouped]
    assert kinds[0] == "peak" and kinds[-2:] == ["generate", "data"]
    assert kinds[-3] == "peer" and len(grouped[-3]) == 2  # both 0.5B video shapes in one process
    with pytest.raises(SystemExit):
        bench_main.parse_args(["--layouts", "shared,packed"])


def test_step_path_imports_no_data_or_torch_packages():
    code = ("import sys; import leanpo_jax.bench.__main__, leanpo_jax.bench.runner, leanpo_jax.bench.step_bench, "
            "leanpo_jax.bench.generate_bench, leanpo_jax.bench.torch_peer, leanpo_jax.train.step; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('grain', 'av', 'imageio', 'imageio_ffmpeg', 'torch', 'liger_kernel')); print(bad); assert not bad")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, env=env, timeout=120)
