"""The `generate` block: self-generated preference pairs (docs/loss.md §5), key by key.

Templates are plain `str.format` strings with the fields {question}, {answer} (the GT) and,
for the reflection turn, {first_turn} (the model's turn-1 answer).
"""

from __future__ import annotations

import ml_collections

from leanpo_jax.config_schema import Block, Field
from leanpo_jax.data.augment import AUGMENT

# Turn 1, "prior injection": the GT answer as hints, then the question.
PRIOR_TEMPLATE = (
    "Hints: {answer}\n"
    "Use these hints together with what you see in the video to answer the question.\n"
    "Question: {question}"
)
# Turn 2, "self-reflection" (a fresh single-turn prompt): improve the turn-1 answer towards the GT.
REFLECTION_TEMPLATE = (
    "Your earlier answer to a question about this video was: {first_turn}\n"
    "That answer can still be improved. Bring it in line with the following information: {answer}\n"
    "Reflect on it as fully as possible, then give an improved and enriched answer.\n"
    "Question: {question}"
)


def _template(*fields: str):
    """A check: `str.format` with only these fields works on the value."""
    def formats(text: str) -> bool:
        try:
            text.format(**{f: "x" for f in fields})
        except (KeyError, IndexError, ValueError):
            return False
        return True
    return formats


DECODING = Block(
    "one side's sampling (winner or loser)",
    temperature=Field(-1.0, "Sampling temperature (0 = greedy); -1 = the model family's default",
                      rule=">= 0 or -1"),
    top_p=Field(-1.0, "Nucleus mass (1 = off); -1 = the family's default", rule="in (0, 1] or -1"),
    top_k=Field(0, "Keep the k most likely ids (0 = off)", rule=">= 0"),
)
GENERATE = Block(
    "self-generated preference pairs (python -m leanpo_jax.generate)",
    optional=True,  # a training config may leave it out
    batch_size=Field(8, "Triplets per generation batch; the last batch is padded (padding rows "
                     "discarded)", rule=">= 1"),
    num_frames=Field(-1, "Frames of the original video for the winner turns and for scoring; "
                     "-1 = data.num_frames", rule=">= 1 or -1"),
    max_prompt_text_tokens=Field(1536, "Prompt text tokens beyond the video ids (the reflection "
                                 "prompt holds the turn-1 answer and the GT); longer fails that "
                                 "record (reported)", rule=">= 1"),
    max_new_tokens=Field(1024, "New tokens per turn (the paper used 1024)", rule=">= 1"),
    winner=DECODING,
    loser=DECODING,
    prior_template=Field(PRIOR_TEMPLATE, "Turn 1, prior injection: {answer} (the GT) as hints, "
                         "then {question}", check=_template("answer", "question"),
                         rule="a str.format template using only {answer, question}"),
    reflection_template=Field(REFLECTION_TEMPLATE, "Turn 2, self-reflection: improve {first_turn} "
                              "towards {answer}, then {question}",
                              check=_template("first_turn", "answer", "question"),
                              rule="a str.format template using only {first_turn, answer, question}"),
    augment=AUGMENT,
    score_answer=Field(True, "Also score the GT answer's average log-prob (the report's third column)"),
    filter_winner_gt_loser=Field(False, "Also write PAIRS.filtered.jsonl keeping pairs with "
                                 "avg_logp(chosen) > avg_logp(rejected) (off: dynamic smoothing "
                                 "handles the rest)"),
    seed=Field(0, "Seed of sampling (per record and turn: derived from this, the record id and the turn)"),
)


def decoding_block() -> ml_collections.ConfigDict:
    """generate.winner / generate.loser defaults (DECODING)."""
    return DECODING.to_config_dict()


def generate_config() -> ml_collections.ConfigDict:
    """Defaults for a GPU run on a real SFT checkpoint (GENERATE); configs/tiny.py shrinks them."""
    return GENERATE.to_config_dict()


def check_generate_config(g: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the generate.* key of an unknown key or an invalid value."""
    GENERATE.validate(g, "generate.")


def resolved_decoding(g: ml_collections.ConfigDict, side: str, family_defaults: dict) -> dict:
    """generate.<side> with -1 entries filled from the model family's decoding defaults
    (`Family.decoding_defaults(config)[side]`: greedy for Qwen-based families; LLaVA-NeXT-Video
    sampled T 1.0, top-p 0.9 winner / 1.0 loser)."""
    family = family_defaults[side]
    d = g[side]
    return {"temperature": family["temperature"] if d.temperature == -1 else float(d.temperature),
            "top_p": family["top_p"] if d.top_p == -1 else float(d.top_p), "top_k": int(d.top_k)}
