"""Demo stage 1: the synthetic video-QA corpus, its splits, the SFT mixture and a small tokenizer.

Videos come from `leanpo_jax.data.synthetic.generate` (moving coloured shapes, here on a mid-grey
backdrop: `BACKGROUND`); the demo re-asks them
with its own questions and answers, built from each record's `attributes`:

  * Question kinds: count, colour and direction only — the attributes that the loser's
    augmented 2-frame video destroys (a strong zoom-in crop loses shapes, grayscale and hue
    jitter lose the colour, a horizontal flip swaps left and right). The synthetic set's
    "shape" question is not asked.
  * Answers (`ANSWERS`): one templated sentence per kind naming the asked attribute and
    nothing else, so a winner and a loser typically differ in that one word, and an exact
    match needs one attribute right (the synthetic templates also name the colour and the
    shape, so an answer there needed three right).
  * Splits by video index: the first `train` videos for training, the rest held out. Every
    held-out video is asked all three questions (`heldout_triplets`).
  * SFT mixture (`sft_triplets`), per train video: the three plain questions, the
    prior-injection prompt (GT as hints) for one of them and the reflection prompt (an
    earlier answer, right or with the attribute word wrong, to be brought in line with the GT)
    for another — so the SFT model follows the generation templates (without them the winner
    ignores the hints and equals the loser wherever the video is not understood) — and the
    third kind as a 4-option question in the benchmark's format (eval.synthetic: Video-MME's
    row, its prompt exactly as lmms-eval builds it), the answer its letter alone.
  * Embedded benchmark (`benchmark`): the held-out videos' three questions as Video-MME rows
    (`leanpo_jax.eval`'s input), the videos `<root>/videos/<videoID>.mp4`.
  * Self-generation triplets (`train_triplets`): the first `generation` train videos, one
    question each (kinds in turn).

The tokenizer is a byte-level BPE trained with `tokenizers` on every text the demo will ever
tokenise, saved as an ordinary tokenizer folder.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from leanpo_jax.data import synthetic
from leanpo_jax.data.tokenize import DEFAULT_SYSTEM_PROMPT
from leanpo_jax.eval import synthetic as benchmark_rows
from leanpo_jax.eval import tasks as eval_tasks
from leanpo_jax.generate.config import PRIOR_TEMPLATE, REFLECTION_TEMPLATE

# Ids 0-4 (the demo preset's video_token_index is 3, image_token_index 4).
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<video>", "<image>"]

# Mid grey: the frames' normalised background is ~0 (SigLIP's mean 0.5), so what a patch
# holds is a shape, not the constant backdrop.
BACKGROUND = (128, 128, 128)
KINDS = ("count", "colour", "direction")
QUESTIONS = {k: synthetic.QUESTIONS[k] for k in KINDS}
# The asked attribute is the only attribute word; every other word is the same for every value.
ANSWERS = {
    "count": "The number of shapes in the video is {count}.",
    "colour": "Every shape in the video is {colour}.",
    "direction": "Every shape in the video moves {direction}.",
}


def normalised_backdrop(background, mean, std) -> float:
    """A backdrop pixel as the tower sees it: (rgb / 255 - mean) / std, averaged over channels."""
    return float(np.mean((np.asarray(background, np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)))


def answer(attrs: Dict, kind: str, value: str = "") -> str:
    """The demo's answer to `kind` about a video with `attrs`; `value` replaces the attribute word."""
    return ANSWERS[kind].format(**{kind: value or synthetic.attribute_word(attrs, kind)})


def _write(path: str, rows: List[Dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return path


def _triplet(rid: str, video: str, attrs: Dict, kind: str) -> Dict:
    truth = {k: attrs[k] for k in ("shape", "colour", "direction", "count")}
    return {"id": f"{rid}-{kind}", "video": video, "prompt": QUESTIONS[kind], "answer": answer(attrs, kind),
            "attributes": {**truth, "question": kind}}


def build_corpus(workdir: str, *, train: int, heldout: int, generation: int, seed: int = 0, frames: int = 12,
                 size: int = 64, background=BACKGROUND) -> Dict:
    """Writes WORKDIR/corpus/{videos/, train_triplets, heldout_triplets, sft_triplets}.jsonl,
    WORKDIR/corpus/benchmark.json and WORKDIR/tokenizer; -> their paths plus "counts" (records
    per file)."""
    root = os.path.join(workdir, "corpus")
    info = synthetic.generate(root, train + heldout, seed=seed, num_frames_video=frames, size=size,
                              background=background)
    videos = [json.loads(line) for line in open(info["triplets"], encoding="utf-8")]
    rng = np.random.default_rng((seed, 7))
    gen, heldout_rows, sft, firsts = [], [], [], []
    mcq_rng = np.random.default_rng((seed, 13))
    for i, v in enumerate(videos):
        attrs, rid = v["attributes"], v["id"]
        rows = [_triplet(rid, v["video"], attrs, kind) for kind in KINDS]
        if i >= train:
            heldout_rows += rows
            continue
        if i < generation:
            gen.append(rows[i % len(KINDS)])
        sft += [{k: r[k] for k in ("id", "video", "prompt", "answer")} for r in rows]
        # Hint-following: the prior prompt for one kind, the reflection prompt for the next.
        r = rows[i % len(KINDS)]
        sft.append({"id": r["id"] + "-prior", "video": r["video"], "answer": r["answer"],
                    "prompt": PRIOR_TEMPLATE.format(answer=r["answer"], question=r["prompt"])})
        r = rows[(i + 1) % len(KINDS)]
        kind = r["attributes"]["question"]
        first = r["answer"] if rng.random() < 0.5 else answer(attrs, kind, synthetic.wrong_value(attrs, kind, rng))
        firsts.append(first)
        sft.append({"id": r["id"] + "-reflect", "video": r["video"], "answer": r["answer"],
                    "prompt": REFLECTION_TEMPLATE.format(first_turn=first, answer=r["answer"], question=r["prompt"])})
        # Letter answers: the third kind as the benchmark asks it.
        kind = KINDS[(i + 2) % len(KINDS)]
        (item,), _ = eval_tasks.build_items("videomme", benchmark_rows.videomme_rows([v], mcq_rng, kinds=(kind,)))
        sft.append({"id": f"{rid}-{kind}-mcq", "video": v["video"], "prompt": item.question_text, "answer": item.gold})
    benchmark = benchmark_rows.videomme_rows(videos[train:], np.random.default_rng((seed, 11)))
    with open(os.path.join(root, "benchmark.json"), "w", encoding="utf-8") as f:
        json.dump(benchmark, f, indent=1)
    out = {"root": root,
           "train_triplets": _write(os.path.join(root, "train_triplets.jsonl"), gen),
           "heldout_triplets": _write(os.path.join(root, "heldout_triplets.jsonl"), heldout_rows),
           "sft_triplets": _write(os.path.join(root, "sft_triplets.jsonl"), sft),
           "benchmark": os.path.join(root, "benchmark.json"), "benchmark_videos": info["videos"],
           "counts": {"train_videos": train, "heldout_videos": heldout, "generation": len(gen),
                      "heldout": len(heldout_rows), "sft": len(sft), "benchmark": len(benchmark)}}
    texts = [DEFAULT_SYSTEM_PROMPT, "system\n", "user\n", "assistant\n", "\n"]
    # The letter questions enter once, as their distinct pieces: 800 copies of Video-MME's long
    # instruction would take the merges the demo's own sentences and chat template need.
    free_form = [r for r in sft if not r["id"].endswith("-mcq")]
    mcq_pieces = {eval_tasks.VIDEOMME_INSTRUCTION, "\n" + eval_tasks.ANSWER_DIRECTLY}
    mcq_pieces |= {line for r in benchmark for line in r["options"]}
    texts += sorted({r["prompt"] for r in free_form} | {r["answer"] for r in sft} | set(firsts) | mcq_pieces)
    texts += [answer(v["attributes"], k, w) for v in videos[:8] for k in KINDS for w in synthetic.VALUES[k]]
    out["tokenizer"] = train_tokenizer(os.path.join(workdir, "tokenizer"), texts)
    return out


def train_tokenizer(folder: str, texts: List[str], vocab_size: int = 512) -> str:
    """Byte-level BPE (exact round trips) with the ChatML specials; -> the folder."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts * 3, trainer=trainer)
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    return folder
