"""One benchmark over one model: greedy answers, letters, scores; resumable after a kill.

    evaluator = Evaluator(config)              # config.model (init_from: an HF folder), data, eval.benchmark
    scores = evaluator.run(out_dir)            # OUT/results.jsonl, scores.json, report.md, accuracy.png

Per item (eval/tasks.py builds them from the file's rows): the video is read as training reads
it (the model's frame policy, data.num_frames, data.frame_sampling / fps_sampling; with
data.video_buckets at the bucket nearest its aspect ratio, batched with its bucket's items), the
benchmark prompt (`question_text`, exactly lmms-eval's doc_to_text) goes through the family's
chat template, the KV-cache sampler answers greedily with the template's stop token, and the
answer letter is extracted with the named extractor. Each result row is appended and fsynced
(generate/output.AppendOnlyJsonl), so a rerun after a kill skips what was written and the
scores equal an uninterrupted run's. Rows that cannot be evaluated (missing fields, answers
outside the options, missing or unreadable videos, prompts the tokenizer refuses) get a result
row with their reason and count as wrong: none leaves the denominator.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from leanpo_jax.data import video as video_lib
from leanpo_jax.data.batch import pad_rows, position_table
from leanpo_jax.data.batching import bucket_interfaces, video_bucket_of
from leanpo_jax.data.tokenize import ChatTokenizer
from leanpo_jax.eval import extract as extract_lib
from leanpo_jax.eval import scoring, tasks
from leanpo_jax.generate.output import AppendOnlyJsonl
from leanpo_jax.generate.sampler import Sampler
from leanpo_jax.generate.self_generate import build_or_load, chat_sampling_config, generation_source
from leanpo_jax.models import family_of
from leanpo_jax.models.runtime import data_interface

RESULTS, SCORES = "results.jsonl", "scores.json"


def letter_logps(model, ids, mask, video_embeds, positions, letter_ids):
    """log π(letter | prompt) for each candidate letter token, from one prefill: [B, len(letter_ids)]."""
    hidden, _ = model.prefill(ids, video_embeds, mask, max_len=ids.shape[1], positions=positions)
    last = jnp.take_along_axis(hidden, (mask.astype(jnp.int32).sum(axis=1) - 1)[:, None, None], axis=1)[:, 0]
    logits = (last @ model.lm_head_kernel()).astype(jnp.float32)
    return jax.nn.log_softmax(logits, axis=-1)[:, letter_ids]


def cut_at_stops(text: str, stops) -> str:
    """`text` up to the earliest of the stop strings (lmms-eval's generation "until")."""
    ends = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return text[:min(ends)] if ends else text


def prompt_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Evaluator:
    """Runs config.eval.benchmark's task on config.model's model (or `model` + `interface`)."""

    def __init__(self, config: ml_collections.ConfigDict, model=None, interface=None,
                 tokenizer: Optional[ChatTokenizer] = None):
        self.config, self.b = config, config.eval.benchmark
        if not self.b.task or self.b.task not in tasks.TASKS:
            raise ValueError(f"eval.benchmark.task={self.b.task!r}: expected one of {sorted(tasks.TASKS)}")
        if not self.b.data:
            raise ValueError("eval.benchmark.data is empty: give the benchmark's file (--data FILE)")
        self.spec = tasks.TASKS[self.b.task]
        self._source = None
        if model is None:
            self._source = generation_source(config)
            interface = data_interface(self._source, config.data)
        elif interface is None:
            interface = family_of(model.config).interface(model.config)
        if not interface.has_video:
            raise ValueError(f"benchmark evaluation needs a video model; {interface.source or 'the model'} has no "
                             "vision tower")
        self.interface, self.model = interface, model
        self.tok = tokenizer or ChatTokenizer.for_model(interface, config.data.tokenizer or None)
        self.frames = int(config.data.num_frames)
        self.n_video = interface.video_tokens(self.frames)
        # With data.video_buckets each video is read at the bucket nearest its aspect ratio, as
        # training and self-generation read it (never skipped for a mismatch: every item is
        # answered), and batched with items of its bucket.
        self.buckets = bucket_interfaces(interface, config.data)
        self.read_args = [video_lib.data_read_args(b.frames, config.data) for b in self.buckets]
        self.max_new_tokens = int(self.b.max_new_tokens) or int(self.spec.max_new_tokens)
        self.sampler = None

    # ------------------------------------------------------------------------------ pieces
    def _ensure_model(self) -> None:
        if self.model is None:
            self.model = build_or_load(self._source, int(self.config.seed))
        if self.sampler is None:
            self.sampler = Sampler(self.model, chat_sampling_config(
                self.tok, self.interface.vocab_size, max_new_tokens=self.max_new_tokens, min_new_tokens=0))
            self._letter_logps = nnx.jit(letter_logps)

    def use_model(self, model) -> None:
        """Evaluates `model` (same architecture, new weights: the trainer's current state) from
        now on, keeping the compiled sampler."""
        self.model = model
        if self.sampler is not None:
            self.sampler.state = nnx.state(model)

    def settings(self) -> Dict:
        """What decides the numbers besides the model: recorded in scores.json and report.md."""
        d = self.config.data
        return {"task": self.b.task, "data": os.path.abspath(self.b.data), "extractor": self.b.extractor,
                "post_prompt": self.b.post_prompt,
                "post_prompt_text": tasks.resolve_post_prompt(self.b.task, self.b.post_prompt),
                "max_new_tokens": self.max_new_tokens, "decoding": "greedy",
                "num_frames": self.frames, "frame_size": list(self.interface.frames.size),
                "video_buckets": [list(b.frames.size) for b in self.buckets] if len(self.buckets) > 1 else [],
                "frame_sampling": d.frame_sampling, "fps_sampling": float(d.fps_sampling),
                "video_tokens": self.n_video, "model": self.interface.source or str(self.config.model.preset),
                "tokenizer": self.tok.where}

    def _video_path(self, root: str, item) -> Optional[str]:
        for rel in tasks.video_candidates(item):
            path = os.path.join(root, rel)
            if os.path.exists(path):
                return path
        return None

    def _letter_ids(self, letters) -> List[int]:
        """The first token of each option letter as the answer's first token."""
        return [int(self.tok.text_ids(letter)[0]) for letter in letters]

    def _bucket_of(self, path: Optional[str]) -> int:
        if len(self.buckets) == 1 or path is None:
            return 0
        # An unreadable header (None) votes for no bucket: the first; the read then reports why.
        return video_bucket_of([video_lib.probe_size(path)], [b.frames.size for b in self.buckets])

    def _answer(self, batch: List[Dict], bucket: int = 0) -> List[str]:
        """Greedy answers (scoring "generate") or the most likely option letter ("likelihood",
        its log-probs kept in each item's "letter_logps") for prepared items (prompt ids,
        frames, sampled fps) of one video bucket, the batch padded."""
        self._ensure_model()
        interface = self.buckets[bucket]
        b = int(self.b.batch_size)
        rows = batch + [batch[0]] * (b - len(batch))
        ids, mask = pad_rows([r["prompt_ids"] for r in rows], self.width)
        positions = None
        if interface.positions_fn is not None:
            positions = position_table([interface.prompt_positions(r["prompt_ids"], r["fps"]) for r in rows],
                                       self.width)
        frames = video_lib.normalize_frames(np.stack([r["frames"] for r in rows]), interface.frames.mean,
                                            interface.frames.std)
        embeds = self.sampler.encode(frames)
        if self.b.scoring == "likelihood":
            letters = sorted({x for r in batch for x in r["item"].letters})
            table = np.asarray(self._letter_logps(self.model, jnp.asarray(ids), jnp.asarray(mask), embeds,
                                                  None if positions is None else jnp.asarray(positions),
                                                  jnp.asarray(self._letter_ids(letters))))
            answers = []
            for i, r in enumerate(batch):
                scores = {x: float(v) for x, v in zip(letters, table[i]) if x in r["item"].letters}
                r["letter_logps"] = scores
                answers.append(max(r["item"].letters, key=lambda x: scores[x]))
            return answers
        out = self.sampler.generate(ids, mask, video_embeds=embeds, seed=0, positions=positions)
        texts = [self.tok.tokenizer.decode(out.tokens[i, 0, :int(out.lengths[i, 0])].tolist(), skip_special_tokens=True)
                 for i in range(len(batch))]
        return [cut_at_stops(t, self.spec.stop_strings).strip() for t in texts]

    def _result(self, item, status: str, output: str = "", prompt_text: str = "", detail: str = "",
                letter_scores: Optional[Dict] = None, frame_size: Optional[List[int]] = None) -> Dict:
        likelihood = self.b.scoring == "likelihood"
        row = {"id": f"{item.task}:{item.id}", "task": item.task, "item_id": item.id, "question_text": item.question_text,
               "prompt_sha256": prompt_sha256(prompt_text) if prompt_text else None, "output": output,
               "parsed": "", "gold": item.gold, "correct": False,
               "extractor": "likelihood" if likelihood else self.b.extractor,
               "status": status, "groups": dict(item.groups), "fallback": False}
        if detail:
            row["detail"] = detail
        if frame_size is not None and len(self.buckets) > 1:
            row["frame_size"] = frame_size  # the video bucket it was read at
        if status == "ok" and likelihood:
            row["letter_logps"] = letter_scores
            row["parsed"], row["correct"] = output, output == item.gold
        elif status == "ok":
            letter = extract_lib.extract(self.b.extractor, output, item.letters, item.task, item.options)
            if not letter and self.spec.random_fallback:
                letter, row["fallback"] = scoring.fallback_letter(item.task, item.id, item.letters, int(self.b.seed)), True
            row["parsed"], row["correct"] = letter, letter == item.gold
        return row

    # ------------------------------------------------------------------------------ the run
    def run(self, out_dir: str, *, progress: bool = True) -> Dict:
        """Evaluates every item not yet in OUT/results.jsonl; rewrites scores.json, report.md and
        the chart from all of this task's rows -> the scores."""
        from leanpo_jax.eval import report as report_lib

        root = self.b.video_root or os.path.dirname(os.path.abspath(self.b.data))
        rows = tasks.load_rows(self.b.data)
        if int(self.b.max_items):
            rows = rows[:int(self.b.max_items)]
        items, bad = tasks.build_items(self.b.task, rows, post_prompt=self.b.post_prompt)
        out = AppendOnlyJsonl(os.path.join(out_dir, RESULTS))
        started, new = time.perf_counter(), 0
        for bad_row in bad:  # unusable rows: counted as wrong, listed with their reason
            rid = f"{self.b.task}:{bad_row.id if bad_row.id is not None else f'row{bad_row.row_index}'}"
            if rid not in out.done:
                out.append({"id": rid, "task": self.b.task, "item_id": bad_row.id, "row_index": bad_row.row_index,
                            "status": bad_row.reason, "detail": bad_row.detail, "correct": False, "parsed": "",
                            "gold": None, "groups": {}, "extractor": self.b.extractor, "fallback": False})
        todo = [it for it in items if f"{it.task}:{it.id}" not in out.done]
        prompts, refused = {}, {}
        for it in items:
            try:
                prompts[it.id] = self.tok.prompt_ids(it.question_text, self.n_video)
            except ValueError as e:
                refused[it.id] = str(e)
        # One prompt width for every item of the file, done or not (the longest text with the
        # most video tokens of any bucket): one compile, and an item's answer depends neither on
        # its batch nor on what a killed run had already written.
        n_videos = [b.video_tokens(self.frames) for b in self.buckets]
        self.width = max([len(p) - self.n_video for p in prompts.values()], default=1) + max(n_videos)
        for it in todo:
            if it.id in refused:
                out.append(self._result(it, "unencodable_prompt", detail=refused[it.id]))
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"eval {self.b.task}", unit="q", dynamic_ncols=True)
        pending: Dict[int, List[Dict]] = {k: [] for k in range(len(self.buckets))}

        def flush(k):
            nonlocal new
            batch = pending[k]
            if not batch:
                return
            for p, text in zip(batch, self._answer(batch, k)):
                out.append(self._result(p["item"], "ok", text, p["prompt_text"], letter_scores=p.get("letter_logps"),
                                        frame_size=p["frame_size"]))
                new += 1
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(q_s=f"{new / max(time.perf_counter() - started, 1e-9):.2f}", refresh=False)
            batch.clear()

        for it in todo:
            if it.id not in prompts:
                bar is not None and bar.update(1)
                continue
            path = self._video_path(root, it)
            if path is None:
                out.append(self._result(it, "missing_video", detail=f"none of {tasks.video_candidates(it)} under {root}"))
                bar is not None and bar.update(1)
                continue
            k = self._bucket_of(path)
            try:
                frames, info = video_lib.read_video(path, self.frames, **self.read_args[k])
            except video_lib.VideoError as e:
                out.append(self._result(it, e.reason, detail=f"video {path!r}: {e.detail}"))
                bar is not None and bar.update(1)
                continue
            fps = info.sampled_fps  # a time-aware position table (Qwen2.5-VL) needs the rate
            ids = prompts[it.id] if n_videos[k] == self.n_video else self.tok.prompt_ids(it.question_text, n_videos[k])
            pending[k].append({"item": it, "prompt_ids": ids, "frames": frames, "fps": fps,
                               "frame_size": list(self.buckets[k].frames.size),
                               "prompt_text": self.tok.tokenizer.decode(ids.tolist(), skip_special_tokens=False)})
            if len(pending[k]) == int(self.b.batch_size):
                flush(k)
        for k in pending:
            flush(k)
        if bar is not None:
            bar.close()
        out.close()
        mine = [r for r in out.rows if r["task"] == self.b.task]
        result = scoring.score(self.b.task, mine)
        result["settings"] = self.settings()
        report_lib.write_outputs(out_dir, self.b.task, result)
        # Run statistics stay out of scores.json: a resumed run writes the same file.
        return dict(result, evaluated_this_run=new, seconds_this_run=round(time.perf_counter() - started, 2),
                    repaired_bytes=out.repaired_bytes)


def run_tasks(config: ml_collections.ConfigDict, benchmarks: List[Dict], out_dir: str, *,
              progress: bool = True) -> Dict[str, Dict]:
    """Several benchmarks on one model into one OUT folder: `benchmarks` = [{task, data,
    video_root}, ...], each overriding config.eval.benchmark's keys; the model is loaded once
    and every task's rows share OUT/results.jsonl (keyed "task:id"), scores.json holds them all.
    -> {task: that run's scores}."""
    tasks_seen = [b["task"] for b in benchmarks]
    if len(set(tasks_seen)) != len(tasks_seen):
        raise ValueError(f"--tasks {','.join(tasks_seen)}: a task appears twice; its rows would share ids")
    first, results = None, {}
    for bench in benchmarks:
        c = ml_collections.ConfigDict(config.to_dict())
        c.eval.benchmark.update({k: v for k, v in bench.items() if v is not None})
        if first is None:
            evaluator = first = Evaluator(c)
        else:
            first._ensure_model()
            evaluator = Evaluator(c, model=first.model, interface=first.interface, tokenizer=first.tok)
        results[bench["task"]] = evaluator.run(out_dir, progress=progress)
    return results

