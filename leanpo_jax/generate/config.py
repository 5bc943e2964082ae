"""The `generate` block: self-generated preference pairs (shared/method.md §3), key by key.

Templates are plain `str.format` strings with the fields {question}, {answer} (the GT) and,
for the reflection turn, {first_turn} (the model's turn-1 answer).
"""

from __future__ import annotations

import ml_collections

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

def decoding_block() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    # Sampling temperature >= 0 (0 = greedy); -1 = the model family's default.
    d.temperature = -1.0
    # Nucleus mass in (0, 1] (1 = off); -1 = the family's default.
    d.top_p = -1.0
    # Keep the k most likely ids (0 = off).
    d.top_k = 0
    return d


def generate_config() -> ml_collections.ConfigDict:
    """Defaults for a GPU run on a real SFT checkpoint; configs/tiny.py shrinks them."""
    from leanpo_jax.data.augment import augment_config

    g = ml_collections.ConfigDict()
    # Triplets per generation batch (>= 1); the last batch is padded (padding rows discarded).
    g.batch_size = 8
    # Frames of the original video for the winner turns and for scoring; -1 = data.num_frames.
    g.num_frames = -1
    # Text tokens allowed in a generation prompt beyond the video ids (the reflection prompt
    # holds the turn-1 answer and the GT); a longer prompt fails that record (reported).
    g.max_prompt_text_tokens = 1536
    # New tokens per turn (>= 1); the paper used 1024.
    g.max_new_tokens = 1024
    g.winner = decoding_block()
    g.loser = decoding_block()
    g.prior_template = PRIOR_TEMPLATE
    g.reflection_template = REFLECTION_TEMPLATE
    # A(V) for the loser's video: crop, jitter, grayscale, blur, flip; 2 frames kept.
    g.augment = augment_config()
    # Also score the GT answer's average log-prob (the report's third column).
    g.score_answer = True
    # Reward check: also write PAIRS.filtered.jsonl keeping only pairs with
    # avg_logp(chosen) > avg_logp(rejected) (off by default: dynamic smoothing handles the rest).
    g.filter_winner_gt_loser = False
    # Seed of sampling (per record: derived from this and the record id).
    g.seed = 0
    return g


def check_generate_config(g: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the generate.* key of an invalid value."""
    for key in ("batch_size", "max_prompt_text_tokens", "max_new_tokens"):
        if int(g[key]) < 1:
            raise ValueError(f"config generate.{key}={g[key]!r}: expected an int >= 1")
    if int(g.num_frames) < 1 and int(g.num_frames) != -1:
        raise ValueError(f"config generate.num_frames={g.num_frames!r}: expected >= 1 or -1")
    for side in ("winner", "loser"):
        d = g[side]
        if d.temperature < 0 and d.temperature != -1:
            raise ValueError(f"config generate.{side}.temperature={d.temperature!r}: expected >= 0 or -1")
        if not (0 < d.top_p <= 1 or d.top_p == -1):
            raise ValueError(f"config generate.{side}.top_p={d.top_p!r}: expected in (0, 1] or -1")
        if int(d.top_k) < 0:
            raise ValueError(f"config generate.{side}.top_k={d.top_k!r}: expected >= 0")
    for key, fields in (("prior_template", ("answer", "question")),
                        ("reflection_template", ("first_turn", "answer", "question"))):
        try:
            g[key].format(**{f: "x" for f in fields})
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"config generate.{key}: a str.format template using only "
                             f"{{{'}, {'.join(fields)}}} is expected ({type(e).__name__}: {e})") from None


def resolved_decoding(g: ml_collections.ConfigDict, side: str, family_defaults: dict) -> dict:
    """generate.<side> with -1 entries filled from the model family's decoding defaults
    (`Family.decoding_defaults(config)[side]`: greedy for Qwen-based families; LLaVA-NeXT-Video
    sampled T 1.0, top-p 0.9 winner / 1.0 loser)."""
    family = family_defaults[side]
    d = g[side]
    return {"temperature": family["temperature"] if d.temperature == -1 else float(d.temperature),
            "top_p": family["top_p"] if d.top_p == -1 else float(d.top_p), "top_k": int(d.top_k)}
