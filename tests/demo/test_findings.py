"""demo/findings.py on a constructed run: the pair breakdown per question kind, and a "What
mattered" whose every figure is one computed from the results (none typed into the prose)."""

import math
import re

import pytest

from leanpo_jax.demo import findings


def _triplet(i, kind, answer):
    return {"id": f"v{i}-{kind}", "answer": answer, "attributes": {"question": kind}}


def _pair(i, kind, chosen, rejected):
    return {"id": f"v{i}-{kind}", "chosen": chosen, "rejected": rejected, "identical": chosen == rejected}


TRIPLETS = [_triplet(0, "colour", "Every shape is red."), _triplet(1, "colour", "Every shape is blue."),
            _triplet(2, "colour", "Every shape is green."), _triplet(3, "count", "There are two."),
            _triplet(4, "direction", "It moves left."), _triplet(5, "direction", "It moves up.")]
ROWS = [_pair(0, "colour", "every shape is red", "Every shape is blue."),     # GT chosen (normalised)
        _pair(1, "colour", "Every shape is red.", "Every shape is blue."),    # GT rejected
        _pair(2, "colour", "Every shape is red.", "Every shape is blue."),    # neither
        _pair(3, "count", "There are two.", "There are two."),                # identical: dropped
        _pair(4, "direction", "It moves left.", "It moves right."),           # GT chosen
        _pair(5, "direction", "It moves down.", "It moves down.")]            # identical


def test_pairs_by_kind_counts_identical_kept_and_where_the_gt_is():
    got = findings.pairs_by_kind(ROWS, TRIPLETS)
    assert list(got) == ["count", "colour", "direction"]
    assert got["colour"] == {"generated": 3, "identical": 0, "kept": 3, "gt_chosen": 1, "gt_rejected": 1, "neither": 1}
    assert got["count"] == {"generated": 1, "identical": 1, "kept": 0, "gt_chosen": 0, "gt_rejected": 0, "neither": 0}
    assert got["direction"] == {"generated": 2, "identical": 1, "kept": 1, "gt_chosen": 1, "gt_rejected": 0,
                                "neither": 0}


def _evaluation(count, colour, direction):
    return {"by_kind": {"count": count, "colour": colour, "direction": direction}}


def _results(scale):
    """A run whose every figure depends on `scale`, so two scales share no quoted number."""
    return findings.DemoResults(
        settings={"train_videos": 37 * scale, "sft_steps": 11 * scale, "sft_batch": 3, "sft_lr": 2e-3 * scale,
                  "pref_steps": 13 * scale},
        corpus_counts={"train_videos": 37 * scale, "sft": 37 * scale * 6},
        shapes={"sft_prompt_text_tokens": 91 * scale, "prompt_text_tokens": 43 * scale, "response_tokens": 17 * scale},
        backdrop={"demo": 0.03 * scale, "synthetic_default": -0.71 - 0.01 * scale},
        times={}, generation={},
        pairs_by_kind=findings.pairs_by_kind(ROWS * scale, TRIPLETS),
        evals={"sft": _evaluation((3 * scale, 29), (23 * scale, 29), (2 * scale, 29)),
               "leanpo": _evaluation((4 * scale, 29), (26, 29), (5 * scale, 29))},
        benchmarks={})


def _probes(scale):
    chosen = {"leanpo": [-1.13 * scale, -1.37 * scale, -1.01 * scale], "dpo": [-1.13 * scale, -2.2, -3.41 * scale]}
    return {m: [{"step": step, "probe/logps/chosen": v} for step, v in zip((0, 7 * scale, 14 * scale), values)]
            for m, values in chosen.items()}


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _expected_numbers(scale):
    """The figures the text may quote, computed here from the constructed run."""
    r, p = _results(scale), _probes(scale)
    lean = [row["probe/logps/chosen"] for row in p["leanpo"]]
    dpo = [row["probe/logps/chosen"] for row in p["dpo"]]
    kinds = r.pairs_by_kind
    figures = [r.backdrop["synthetic_default"], r.backdrop["demo"], *r.settings.values(), 6,
               r.settings["sft_steps"] * r.settings["sft_batch"] / r.settings["train_videos"],
               *r.shapes.values(), *lean, *dpo, math.exp(lean[0]), 7 * scale, 25, r.pairs_kept, r.pairs_generated,
               *[v for t in kinds.values() for v in t.values()],
               *[v for e in r.evals.values() for c_n in e["by_kind"].values() for v in c_n]]
    out = set()
    for x in figures:
        out |= {str(x), f"{x:.2f}", f"{x:.1f}", f"{x:g}"}
        if float(x).is_integer():
            out.add(str(int(x)))
    return out


@pytest.mark.parametrize("scale", [1, 2])
def test_what_mattered_quotes_only_numbers_computed_from_the_results(scale):
    text = "\n".join(findings.what_mattered(_results(scale), _probes(scale)))
    quoted = set(NUMBER.findall(text))
    assert quoted <= _expected_numbers(scale), sorted(quoted - _expected_numbers(scale))
    # The figures it must quote, as the report formats them.
    lean = [row["probe/logps/chosen"] for row in _probes(scale)["leanpo"]]
    for needle in (f"{37 * scale} train videos with 6 SFT records each",
                   f"{11 * scale} SFT steps of 3, so {11 * scale * 3 / (37 * scale):.1f} SFT records per video",
                   f"({91 * scale} prompt text tokens for SFT, {43 * scale} for pairs and evaluation, "
                   f"{17 * scale} response tokens",
                   f"{lean[0]:.2f} under the SFT model (probability {math.exp(lean[0]):.2f})",
                   f"LeanPO's chosen goes {lean[0]:.2f} → {lean[1]:.2f} (its lowest, at step {7 * scale}) → "
                   f"{lean[2]:.2f}, at or above the start",
                   f"answers {23 * scale}/29 held-out colour questions right",
                   f"count {3 * scale}/29 (chance 25%)",
                   f"{4 * scale} of {6 * scale} pairs are kept",
                   f"{3 * scale} colour pairs ({scale} with the GT as chosen, {scale} with it as rejected, {scale} "
                   "with neither)", "no count pair", f"{scale} direction pair{'s' if scale > 1 else ''} (",
                   f"identical pairs by question kind count {scale}/{scale}, colour 0/{3 * scale}, "
                   f"direction {scale}/{2 * scale}"):
        assert needle in text, needle


def test_what_mattered_follows_the_results_not_a_script():
    one = findings.what_mattered(_results(1), _probes(1))
    two = findings.what_mattered(_results(2), _probes(2))
    # Every bullet with a figure changes with the run (the one about templates has none).
    changed = [a != b for a, b in zip(one, two)]
    assert [bool(NUMBER.search(a)) for a in one] == changed
    assert sum(changed) >= 5
