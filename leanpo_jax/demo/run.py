"""The demo's stages, each through the project's real code paths (see leanpo_jax/demo/__main__.py).

1 corpus (data.synthetic + tokenizer) -> 2 SFT (train.trainer, loss sft, everything trainable)
-> 3 self-generated pairs (generate.SelfGenerator with the SFT export) -> 4 DPO / SimPO / LeanPO
(train.trainer from the same SFT weights, tower + projector frozen, same optimiser, lr, steps,
seed; probe set scored every k steps) -> 5 held-out evaluation (exact match on the plain
questions, and the embedded Video-MME-format benchmark through leanpo_jax.eval) -> 6 report.

Progress: the trainer's and the generator's tqdm bars (stderr) while a stage runs, then one
line per stage on stdout, "[demo] stage 3/6 generation: 16.5 s (...)".
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Dict, List

import ml_collections

from leanpo_jax.data import synthetic
from leanpo_jax.demo import corpus as corpus_lib
from leanpo_jax.demo import evaluate as eval_lib
from leanpo_jax.demo import findings
from leanpo_jax.demo import report as report_lib
from leanpo_jax.generate.config import generate_config
from leanpo_jax.train.config import training_config

METHODS = report_lib.METHODS
STAGES = ("corpus", "sft", "generation", "preference", "evaluation", "report")


@dataclasses.dataclass(frozen=True)
class Settings:
    # Videos are cheap (~80 a second); many distinct ones, each seen about once, are what
    # lets the from-scratch tower generalise to unseen videos.
    train_videos: int = 800
    # Each held-out video is asked all three questions.
    heldout_videos: int = 32
    # Train videos whose question (one each, kinds in turn) goes to self-generation.
    generation_videos: int = 192
    probe_pairs: int = 16
    # 250 steps leave the SFT model unsure of its colour answers (probe chosen ≈ -1.1 summed);
    # at 400 it is near-certain (≈ -0.1), where any update can only lower the chosen likelihood.
    sft_steps: int = 250
    sft_batch: int = 8
    sft_lr: float = 1e-3
    # 90 rather than 60: LeanPO's chosen likelihood dips while the margins grow, then its SFT
    # term lifts it back above the start once the preference term saturates.
    pref_steps: int = 90
    pref_batch: int = 8
    pref_lr: float = 1e-4
    # Constant after warmup: with a linear decay to 0 the lr is nearly spent by the time the
    # SFT term starts lifting LeanPO's chosen likelihood back (the letter questions in the SFT
    # mixture left it -1.22 -> -1.30 by step 90 with linear decay, -> -0.95 with a constant lr).
    pref_schedule: str = "constant"
    probe_every: int = 5
    max_new_tokens: int = 16
    # Generation temperature for winner and loser; -1 = the model family's default (greedy).
    gen_temperature: float = -1.0
    seed: int = 0


# Smoke-test sizes: an SFT model of 6 steps decodes one degenerate answer for every prompt,
# so the fast variant samples (T = 1) to get pairs whose sides differ.
FAST = Settings(train_videos=12, heldout_videos=4, generation_videos=12, probe_pairs=4, sft_steps=6, sft_batch=4,
                pref_steps=4, pref_batch=4, probe_every=2, max_new_tokens=8, gen_temperature=1.0)


# Where a GPU is present: more data, longer runs (picked by `default_settings`).
# (Not measured since issue 7 changed the CPU defaults: same recipe, sizes scaled up.)
GPU = Settings(train_videos=2400, heldout_videos=64, generation_videos=384, probe_pairs=32, sft_steps=800,
               sft_batch=16, pref_steps=200, pref_batch=16, probe_every=10)


def default_settings() -> Settings:
    """Settings() on CPU, GPU on an accelerator."""
    import jax

    return GPU if jax.devices()[0].platform == "gpu" else Settings()


# The SFT mixture's longest prompts with the chat template: the 4-option question ~121 text tokens,
# the reflection prompt (template, earlier answer, GT, question) ~116.
SFT_PROMPT_TEXT_TOKENS = 136


def base_config(s: Settings, tokenizer: str) -> ml_collections.ConfigDict:
    c = training_config("demo")
    c.seed = s.seed
    c.data.tokenizer = tokenizer
    c.data.num_frames = 8
    # Plain questions (preference pairs, evaluation) take < 32 text tokens, answers ~11 ids;
    # sft_config raises the prompt length for the hint / reflection prompts.
    c.data.max_prompt_text_tokens = 48
    c.data.response_buckets = (16,)
    c.data.max_response_tokens = 16
    c.data.shuffle_seed = s.seed
    c.model.dtype = "auto"
    c.optimizer.warmup_ratio = 0.1
    c.optimizer.schedule = "linear"
    c.train.chunk_size = 64
    c.logging.log_every = 1
    c.logging.progress_bar = True  # the demo's progress while a training stage runs
    c.checkpoint.every = 10_000  # the final step only
    c.checkpoint.max_to_keep = 1
    c.eval.every = 10_000
    return c


def _epochs(records: int, batch: int, steps: int) -> int:
    return max(1, -(-steps * batch // max(records, 1)))


def sft_config(s: Settings, paths: Dict) -> ml_collections.ConfigDict:
    c = base_config(s, paths["tokenizer"])
    c.loss.name = "sft"
    c.data.max_prompt_text_tokens = SFT_PROMPT_TEXT_TOKENS
    c.data.triplets, c.data.video_root = paths["sft_triplets"], paths["root"]
    c.data.batch_size = s.sft_batch
    c.data.num_epochs = _epochs(paths["counts"]["sft"], s.sft_batch, s.sft_steps)
    c.total_steps = s.sft_steps
    c.model.frozen_modules = ()  # the SFT stage trains tower, projector and LLM
    c.optimizer.learning_rate = s.sft_lr
    c.probe.every = 10_000
    return c


def preference_config(s: Settings, paths: Dict, method: str, pairs: str, num_pairs: int) -> ml_collections.ConfigDict:
    c = base_config(s, paths["tokenizer"])
    c.model.init_from = paths["sft_hf"]
    c.data.pairs, c.data.video_root = pairs, paths["root"]
    c.data.batch_size = s.pref_batch
    c.data.num_epochs = _epochs(num_pairs, s.pref_batch, s.pref_steps)
    c.total_steps = s.pref_steps
    c.optimizer.learning_rate, c.optimizer.schedule = s.pref_lr, s.pref_schedule
    c.probe.pairs, c.probe.every = paths["probe_pairs"], s.probe_every
    c.checkpoint.export_hf = True
    c.loss.name = method
    if method == "dpo":
        c.loss.beta, c.loss.sft_weight, c.loss.label_smoothing = 0.1, 0.0, 0.0
    elif method == "simpo":
        c.loss.label_smoothing, c.loss.sft_weight = 0.0, 0.0
    return c


def generation_config(s: Settings, paths: Dict) -> ml_collections.ConfigDict:
    c = base_config(s, paths["tokenizer"])
    c.model.init_from = paths["sft_hf"]
    c.generate = generate_config()
    c.generate.batch_size = 8
    c.generate.max_new_tokens = s.max_new_tokens
    c.generate.max_prompt_text_tokens = 160
    c.generate.winner.temperature = s.gen_temperature
    c.generate.loser.temperature = s.gen_temperature
    return c


def benchmark_config(s: Settings, paths: Dict) -> ml_collections.ConfigDict:
    """leanpo-eval's config for the held-out benchmark: Video-MME's prompt, greedy, its 16
    new tokens, the paper-era extractor (eval.benchmark defaults)."""
    c = base_config(s, paths["tokenizer"])
    c.data.video_root = paths["root"]
    b = c.eval.benchmark
    b.task, b.data, b.video_root, b.batch_size = "videomme", paths["benchmark"], paths["benchmark_videos"], 8
    return c


def _read_jsonl(path: str) -> List[Dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_demo(workdir: str, settings: Settings = Settings()) -> Dict:
    """Runs every stage into `workdir` (fresh each time) -> the summary dict (report.write_report).
    Prints one line per stage (its number, name, seconds and what it produced)."""
    from leanpo_jax.eval.run import Evaluator
    from leanpo_jax.generate import report as gen_report
    from leanpo_jax.generate.self_generate import SelfGenerator
    from leanpo_jax.train.trainer import train

    s = settings
    workdir = os.path.abspath(workdir)
    for sub in ("corpus", "tokenizer", "sft", "pairs", "benchmark", *METHODS):
        shutil.rmtree(os.path.join(workdir, sub), ignore_errors=True)
    os.makedirs(workdir, exist_ok=True)
    times: Dict[str, float] = {}
    started: Dict[str, float] = {}

    def stage(name):
        started[name] = time.perf_counter()

    def done(name, detail=""):
        times[name] = round(time.perf_counter() - started[name], 1)
        number = STAGES.index(name) + 1
        print(f"[demo] stage {number}/{len(STAGES)} {name}: {times[name]} s{f' ({detail})' if detail else ''}",
              flush=True)

    stage("corpus")
    paths = corpus_lib.build_corpus(workdir, train=s.train_videos, heldout=s.heldout_videos,
                                    generation=s.generation_videos, seed=s.seed)
    done("corpus", f"{paths['counts']['sft']} SFT records, {paths['counts']['generation']} generation triplets, "
                   f"{paths['counts']['heldout']} held-out questions")

    stage("sft")
    sft = train(sft_config(s, paths), os.path.join(workdir, "sft"))
    paths["sft_hf"] = sft["hf"]
    done("sft", f"{s.sft_steps} steps")

    stage("generation")
    out = os.path.join(workdir, "pairs", "generated.jsonl")
    generator = SelfGenerator(generation_config(s, paths))
    gen = generator.run(paths["train_triplets"], out, video_root=paths["root"], progress=True)
    rows = _read_jsonl(out)
    kept = [r for r in rows if not r["identical"]]
    paths["pairs"] = os.path.join(workdir, "pairs", "train_pairs.jsonl")
    paths["probe_pairs"] = os.path.join(workdir, "pairs", "probe_pairs.jsonl")
    with open(paths["pairs"], "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    with open(paths["probe_pairs"], "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept[: s.probe_pairs])
    wins = gen["winner_above_loser_non_identical"]["count"]
    done("generation", f"{len(rows)} pairs, {gen['identical_pairs']} with chosen == rejected dropped, winner > "
                       f"loser {gen_report.format_share(wins, gen['non_identical_pairs'])} of the rest")
    if len(kept) < s.pref_batch:
        raise RuntimeError(f"only {len(kept)} usable pairs were generated (< batch {s.pref_batch}); "
                           f"see {out} and its .report.json")

    runs = {}
    stage("preference")
    for method in METHODS:
        t0 = time.perf_counter()
        runs[method] = train(preference_config(s, paths, method, paths["pairs"], len(kept)), os.path.join(workdir, method))
        times[f"preference_{method}"] = round(time.perf_counter() - t0, 1)
    done("preference", ", ".join(f"{m} {times[f'preference_{m}']} s" for m in METHODS))

    stage("evaluation")
    data = base_config(s, paths["tokenizer"]).data
    data.video_root = paths["root"]
    evals, benchmarks, frames, evaluator, sampler = {}, {}, None, None, None
    for name, hf in (("sft", paths["sft_hf"]), *((m, runs[m]["hf"]) for m in METHODS)):
        model, interface = eval_lib.load_model(hf, data)
        frames = interface.frames  # the same frame policy for every model (all from the SFT export)
        # Every model has the SFT model's architecture: one compiled sampler, each model's weights.
        if sampler is None:
            sampler = eval_lib.answer_sampler(model, interface, data, max_new_tokens=s.max_new_tokens)
        evals[name] = eval_lib.evaluate(model, interface, data, paths["heldout_triplets"],
                                        max_new_tokens=s.max_new_tokens, sampler=sampler)
        if evaluator is None:
            evaluator = Evaluator(benchmark_config(s, paths), model=model, interface=interface)
        else:
            evaluator.use_model(model)
        benchmarks[name] = evaluator.run(os.path.join(workdir, "benchmark", name), progress=False)
    done("evaluation", ", ".join(f"{name} {e['correct']}/{e['total']} (benchmark {benchmarks[name]['correct']}/"
                                 f"{benchmarks[name]['total']})" for name, e in evals.items()))

    stage("report")
    results = findings.DemoResults(
        settings=dataclasses.asdict(s), corpus_counts=paths["counts"], shapes=config_shapes(s, paths),
        backdrop={"demo": corpus_lib.normalised_backdrop(corpus_lib.BACKGROUND, frames.mean, frames.std),
                  "synthetic_default": corpus_lib.normalised_backdrop(synthetic.BACKGROUND, frames.mean, frames.std)},
        times=times, generation=gen, pairs_by_kind=findings.pairs_by_kind(rows, _read_jsonl(paths["train_triplets"])),
        evals=evals, benchmarks=benchmarks)
    summary = report_lib.write_report(workdir, results)
    done("report", os.path.join(workdir, "demo_report.md"))
    return summary


def config_shapes(s: Settings, paths: Dict) -> Dict[str, int]:
    """The static text shapes the stages' configs use (what "What mattered" quotes)."""
    sft, pref = sft_config(s, paths).data, base_config(s, paths["tokenizer"]).data
    return {"sft_prompt_text_tokens": int(sft.max_prompt_text_tokens),
            "prompt_text_tokens": int(pref.max_prompt_text_tokens), "response_tokens": int(pref.max_response_tokens)}
