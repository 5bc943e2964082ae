"""Demo stage 1: the synthetic video-QA corpus, its splits, the SFT mixture and a small tokenizer.

Videos come from `leanpo_jax.data.synthetic` (moving coloured shapes; questions about count,
colour, direction and shape; templated answers, so a winner and a loser differ in one or two
attribute words). Splits by video index: train, held-out. The SFT mixture holds, per train
video, the plain question, the prior-injection prompt (GT as hints) and the reflection prompt
(an earlier answer with one attribute word wrong, to be brought in line with the GT) — so the
SFT model can follow the generation templates. The tokenizer is a byte-level BPE trained with
`tokenizers` on every text the demo will ever tokenise, saved as an ordinary tokenizer folder.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from leanpo_jax.data import synthetic
from leanpo_jax.data.tokenize import DEFAULT_SYSTEM_PROMPT
from leanpo_jax.generate.config import PRIOR_TEMPLATE, REFLECTION_TEMPLATE

# Ids 0-4 (the demo preset's video_token_index is 3, image_token_index 4).
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<video>", "<image>"]


def _write(path: str, rows: List[Dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return path


def build_corpus(workdir: str, *, train: int, heldout: int, seed: int = 0, frames: int = 12,
                 size: int = 64) -> Dict[str, str]:
    """Writes WORKDIR/corpus/{videos/, train_triplets, heldout_triplets, sft_triplets}.jsonl."""
    root = os.path.join(workdir, "corpus")
    info = synthetic.generate(root, train + heldout, seed=seed, num_frames_video=frames, size=size)
    pairs = [json.loads(line) for line in open(info["pairs"], encoding="utf-8")]
    triplets = [json.loads(line) for line in open(info["triplets"], encoding="utf-8")]
    out = {"root": root,
           "train_triplets": _write(os.path.join(root, "train_triplets.jsonl"), triplets[:train]),
           "heldout_triplets": _write(os.path.join(root, "heldout_triplets.jsonl"), triplets[train:])}
    sft = []
    for t, p in zip(triplets[:train], pairs[:train]):
        q, a = t["prompt"], t["answer"]
        sft.append({"id": t["id"] + "-plain", "video": t["video"], "prompt": q, "answer": a})
        sft.append({"id": t["id"] + "-prior", "video": t["video"],
                    "prompt": PRIOR_TEMPLATE.format(answer=a, question=q), "answer": a})
        sft.append({"id": t["id"] + "-reflect", "video": t["video"],
                    "prompt": REFLECTION_TEMPLATE.format(first_turn=p["rejected"], answer=a, question=q),
                    "answer": a})
    out["sft_triplets"] = _write(os.path.join(root, "sft_triplets.jsonl"), sft)
    texts = [DEFAULT_SYSTEM_PROMPT, "system\n", "user\n", "assistant\n", "\n"]
    texts += [r["prompt"] for r in sft] + [r["answer"] for r in sft] + [p["rejected"] for p in pairs]
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
