"""Demo stage 5: a model on the held-out split — greedy exact-match accuracy and GT log-likelihood.

Accuracy: the model answers each held-out question greedily (the KV-cache sampler, plain
question, original video); an answer counts when it equals the GT sentence after normalising
case, surrounding spaces and a final period. Log-likelihood: mean summed log π(GT answer)
(and per token) with `models.scoring` over the held-out triplets as the pipeline reads them.
"""

from __future__ import annotations

import json
import re
from typing import Dict, Optional

import jax
import ml_collections
import numpy as np
from flax import nnx

from leanpo_jax.data import video as video_lib
from leanpo_jax.data.batch import pad_rows
from leanpo_jax.data.pipeline import DataPipeline
from leanpo_jax.data.records import RecordSource, TripletRecord
from leanpo_jax.data.tokenize import ChatTokenizer
from leanpo_jax.generate.sampler import Sampler
from leanpo_jax.generate.self_generate import chat_sampling_config
from leanpo_jax.models import resolve_model
from leanpo_jax.models.runtime import data_interface
from leanpo_jax.models.scoring import score_pairs


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".").strip()


def evaluate(model, interface, data: ml_collections.ConfigDict, triplets: str, *, max_new_tokens: int = 32,
             batch_size: int = 8, sampler: Optional[Sampler] = None) -> Dict:
    """-> {accuracy, correct, total, by_kind, gt_logp, gt_logp_avg, examples}. `interface`:
    the model's data interface (`load_model`). `sampler`: a greedy sampler built by
    `answer_sampler` for a model of the same architecture (its compiled programs are reused;
    its weights are replaced by `model`'s); None builds one.

    `by_kind`: {question kind: [correct, total]} where the triplets carry `attributes.question`
    (the demo corpus does), else {}."""
    tok = ChatTokenizer.for_model(interface, data.tokenizer or None)
    frames_n = int(data.num_frames)
    n = interface.video_tokens(frames_n)
    if sampler is None:
        sampler = answer_sampler(model, interface, data, max_new_tokens=max_new_tokens)
    else:
        sampler.state = nnx.state(model)
    source = RecordSource(triplets, "triplets")
    records = [source[i] for i in range(len(source))]
    records = [r for r in records if isinstance(r, TripletRecord)]
    kinds = {}
    with open(triplets, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            kinds[row["id"]] = (row.get("attributes") or {}).get("question")
    by_kind: Dict[str, list] = {}
    root = data.video_root
    policy = interface.frames
    correct, examples = 0, []
    for start in range(0, len(records), batch_size):
        chunk = records[start: start + batch_size]
        rows = chunk + [chunk[0]] * (batch_size - len(chunk))
        frames = np.stack([video_lib.read_video(f"{root}/{r.video}", frames_n, frame_sampling=data.frame_sampling,
                                                **video_lib.policy_read_args(policy))[0]
                           for r in rows])
        ids, mask = pad_rows([tok.prompt_ids(r.prompt, n) for r in rows], n + int(data.max_prompt_text_tokens))
        out = sampler.generate(ids, mask, frames=video_lib.normalize_frames(frames, policy.mean, policy.std))
        for i, r in enumerate(chunk):
            text = tok.tokenizer.decode(out.tokens[i, 0, : out.lengths[i, 0]].tolist(), skip_special_tokens=True)
            hit = normalise(text) == normalise(r.answer)
            correct += hit
            kind = kinds.get(r.id)
            if kind is not None:
                tally = by_kind.setdefault(kind, [0, 0])
                tally[0], tally[1] = tally[0] + int(hit), tally[1] + 1
            if len(examples) < 6:
                examples.append({"question": r.prompt, "answer": r.answer, "generated": text.strip(), "correct": bool(hit)})
    eval_data = ml_collections.ConfigDict(data.to_dict())
    eval_data.pairs, eval_data.kind, eval_data.num_workers = triplets, "triplets", 0
    with DataPipeline(eval_data, model=interface, train=False, tokenizer=tok, skipped_path=None) as pipe:
        scores = score_pairs(model, pipe, num_records=len(pipe.source))
    keep = ~np.isnan(scores["answer"])
    total = len(records)
    return {"accuracy": correct / total if total else 0.0, "correct": int(correct), "total": total,
            "by_kind": by_kind,
            "gt_logp": float(np.mean(scores["answer"][keep])), "gt_logp_avg": float(np.mean(scores["answer_avg"][keep])),
            "examples": examples}


def answer_sampler(model, interface, data: ml_collections.ConfigDict, *, max_new_tokens: int = 32) -> Sampler:
    """The greedy chat sampler `evaluate` answers with (stops at the template's end of turn)."""
    tok = ChatTokenizer.for_model(interface, data.tokenizer or None)
    return Sampler(model, chat_sampling_config(tok, interface.vocab_size, max_new_tokens=max_new_tokens,
                                               min_new_tokens=0))


def load_model(hf_dir: str, data: ml_collections.ConfigDict):
    """-> (model, data interface) of an exported HF folder (its config decides the family)."""
    source = resolve_model(init_from=hf_dir)
    source = source.replace_config(attention_impl="cudnn" if jax.devices()[0].platform == "gpu" else "xla")
    return source.load(), data_interface(source, data)
