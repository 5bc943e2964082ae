"""The demo report's "What mattered": every figure it quotes is computed from the run's results.

    results = DemoResults(settings=..., corpus_counts=..., shapes=..., backdrop=..., times=...,
                          generation=..., pairs_by_kind=pairs_by_kind(rows, triplets), evals=...)
    what_mattered(results, probes)        # -> markdown bullets

What the settings were chosen against (the runs of issue 7: a dark backdrop, fewer videos seen
more often, longer SFT, three-attribute answers) is described in words only: those runs are not
repeated here, so their figures would be quotes, not results.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Sequence

from leanpo_jax.data import synthetic
from leanpo_jax.demo.evaluate import normalise

KINDS = ("count", "colour", "direction")


@dataclasses.dataclass(frozen=True)
class DemoResults:
    """What a demo run measured, as the report needs it.

    settings: dataclasses.asdict(run.Settings); corpus_counts: corpus.build_corpus()["counts"];
    shapes: {sft_prompt_text_tokens, prompt_text_tokens, response_tokens} of the configs;
    backdrop: the normalised background pixel {demo, synthetic_default}; times: stage -> s;
    generation: generate.report.build_report of the generated pairs; pairs_by_kind: see
    `pairs_by_kind`; evals: model name -> evaluate.evaluate's dict (sft, dpo, simpo, leanpo);
    benchmarks: model name -> eval.run.Evaluator.run's scores on the embedded benchmark.
    """

    settings: Dict
    corpus_counts: Dict[str, int]
    shapes: Dict[str, int]
    backdrop: Dict[str, float]
    times: Dict[str, float]
    generation: Dict
    pairs_by_kind: Dict[str, Dict[str, int]]
    evals: Dict[str, Dict]
    benchmarks: Dict[str, Dict]

    @property
    def pairs_generated(self) -> int:
        return sum(k["generated"] for k in self.pairs_by_kind.values())

    @property
    def pairs_kept(self) -> int:
        return sum(k["kept"] for k in self.pairs_by_kind.values())


def _schedule_note(settings: Dict) -> str:
    if settings.get("pref_schedule") != "constant":
        return ""
    return (" (a constant lr after warmup: a linear decay has spent the lr by the time the SFT term lifts the "
            "chosen side back)")


def pairs_by_kind(rows: Sequence[Dict], triplets: Sequence[Dict]) -> Dict[str, Dict[str, int]]:
    """Generated pair rows (id, chosen, rejected, identical) and the triplets they came from
    (id, answer, attributes.question) -> per question kind (KINDS order, then any other):
    {generated, identical, kept (= not identical), gt_chosen, gt_rejected, neither}, the last
    three over the kept pairs, a side "is the GT" when it equals the answer after
    evaluate.normalise (the exact-match rule of the evaluation)."""
    source = {t["id"]: t for t in triplets}
    tally: Dict[str, Dict[str, int]] = {}
    for row in rows:
        triplet = source[row["id"]]
        kind = (triplet.get("attributes") or {}).get("question", "other")
        t = tally.setdefault(kind, dict.fromkeys(("generated", "identical", "kept", "gt_chosen", "gt_rejected",
                                                  "neither"), 0))
        t["generated"] += 1
        if row["identical"]:
            t["identical"] += 1
            continue
        t["kept"] += 1
        gt = normalise(triplet["answer"])
        side = ("gt_chosen" if normalise(row["chosen"]) == gt else
                "gt_rejected" if normalise(row["rejected"]) == gt else "neither")
        t[side] += 1
    order = [k for k in KINDS if k in tally] + sorted(k for k in tally if k not in KINDS)
    return {k: tally[k] for k in order}


def _n(x: float) -> str:
    """A count or ratio as prose: integers without a decimal point, others to one decimal."""
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _accuracy(evaluation: Dict, kind: str) -> str:
    correct, total = evaluation.get("by_kind", {}).get(kind, (0, 0))
    return f"{correct}/{total}"


def _chance(kind: str) -> str:
    return f"{100 / len(synthetic.VALUES[kind]):.0f}%"


def _kept_breakdown(kinds: Dict[str, Dict[str, int]]) -> str:
    parts = []
    for kind, t in kinds.items():
        if not t["kept"]:
            parts.append(f"no {kind} pair")
            continue
        noun = "pair" if t["kept"] == 1 else "pairs"
        parts.append(f"{t['kept']} {kind} {noun} ({t['gt_chosen']} with the GT as chosen, {t['gt_rejected']} "
                     f"with it as rejected, {t['neither']} with neither)")
    return "; ".join(parts)


def _chosen_curve(probes: Dict[str, List[Dict]], method: str) -> List[tuple]:
    return [(r["step"], r["probe/logps/chosen"]) for r in probes[method]]


def what_mattered(results: DemoResults, probes: Dict[str, List[Dict]]) -> List[str]:
    """Markdown bullets for the report: each number is read from `results` (and the probe rows
    per method, `probes`: the trainer's kind == "probe" metrics rows, in step order)."""
    s, counts, shapes, evals = results.settings, results.corpus_counts, results.shapes, results.evals
    records_per_video = counts["sft"] / counts["train_videos"]
    views_per_video = s["sft_steps"] * s["sft_batch"] / counts["train_videos"]
    lean, dpo = _chosen_curve(probes, "leanpo"), _chosen_curve(probes, "dpo")
    low_step, low = min(lean, key=lambda point: point[1])
    start, end = lean[0][1], lean[-1][1]
    dip = (f"{start:.2f} → {low:.2f} (its lowest, at step {low_step}) → {end:.2f}" if low < min(start, end)
           else f"{start:.2f} → {end:.2f}")
    kinds = results.pairs_by_kind
    identical = ", ".join(f"{kind} {t['identical']}/{t['generated']}" for kind, t in kinds.items())
    sft, leanpo = evals["sft"], evals["leanpo"]
    return [
        "- The backdrop. On the synthetic set's default near-black background (a normalised pixel "
        f"{results.backdrop['synthetic_default']:.2f}) the tower's tokens are a large constant plus a small "
        "video-dependent part; in the runs that chose these settings the LLM learnt to stop attending "
        "to the video (its answers did not change when the video embeddings were zeroed) and answered "
        "colour from the text prior, whatever the steps, learning rate, a frozen tower or smaller "
        f"patches. On the demo's mid-grey background (normalised {results.backdrop['demo']:.2f}) this "
        f"run's SFT model answers {_accuracy(sft, 'colour')} held-out colour questions right.",
        f"- Many distinct videos, each seen a few times: {s['train_videos']} train videos with "
        f"{_n(records_per_video)} SFT records each, {s['sft_steps']} SFT steps of {s['sft_batch']}, so "
        f"{_n(views_per_video)} SFT records per video on average, instead of fewer videos seen many "
        "times each (which the model memorised).",
        "- One attribute per answer: the synthetic set's templates name colour, shape and count "
        "together, so an exact match needed every attribute right; the demo's answers name only the "
        "asked one.",
        f"- Short static shapes ({shapes['sft_prompt_text_tokens']} prompt text tokens for SFT, "
        f"{shapes['prompt_text_tokens']} for pairs and evaluation, {shapes['response_tokens']} response "
        f"tokens; they were longer before) and an SFT lr of {s['sft_lr']:g}.",
        f"- SFT length and preference steps: after {s['sft_steps']} SFT steps the probe pairs' chosen "
        f"side has a summed log-prob of {start:.2f} under the SFT model (probability {math.exp(start):.2f}); "
        "a longer SFT made it near-certain, and then every preference update could only lower it. Over "
        f"{s['pref_steps']} preference steps{_schedule_note(s)} LeanPO's chosen goes {dip}, "
        f"{'at or above' if end >= start else 'below'} the start; DPO's goes {dpo[0][1]:.2f} → "
        f"{dpo[-1][1]:.2f}.",
        f"- Count and direction: SFT held-out accuracy count {_accuracy(sft, 'count')} (chance "
        f"{_chance('count')}), direction {_accuracy(sft, 'direction')} (chance {_chance('direction')}), "
        f"colour {_accuracy(sft, 'colour')}. Where the SFT model does not read an attribute from the video "
        "nor follow the GT hints of the prior / reflection prompts for it, winner and loser come out "
        f"the same and the pair is dropped: identical pairs by question kind {identical}. "
        f"{results.pairs_kept} of {results.pairs_generated} pairs are kept: {_kept_breakdown(kinds)}. "
        f"LeanPO's held-out accuracy: count {_accuracy(leanpo, 'count')}, direction "
        f"{_accuracy(leanpo, 'direction')}, colour {_accuracy(leanpo, 'colour')}.",
    ]
