"""Self-generated preference pairs (docs/loss.md §5) with the frozen SFT model.

Per triplet (video V, question q, GT answer a):
    r1  = model(V, prior_template(a, q))                      turn 1: the GT as hints
    y_w = model(V, reflection_template(r1, a, q))             turn 2: self-reflection -> winner
    y_l = model(A(V) (2 frames), q)                           augmented video, plain question -> loser
then avg log π(y_w), avg log π(y_l) (and of a) under the same model, computed with
`models.scoring` on the pair re-tokenised exactly as the training pipeline will tokenise it.
The model (config.model.init_from, or a preset) decides frames, template and tokenizer; with
data.video_buckets each record is read at the bucket nearest its own aspect ratio and batched
with records of that bucket (rows are then written in batch order, not file order).

Output rows (JSONL, appended and flushed per record; ids already present are skipped on a
rerun): id, video, prompt, chosen, rejected, first_turn, chosen_avg_logp, rejected_avg_logp,
answer_avg_logp, identical (chosen == rejected), augment (the A(V) parameters). Records that
fail (bad JSON, unreadable video, prompt too long, generation error) are reported with their
reason in PAIRS.failed.jsonl and on stderr (an empty / whitespace-only winner or loser too:
the training reader would skip it); the run continues. PAIRS.report.json + a printed
table summarise the reward check (generate/report.py).

Reproducible: every draw of a record comes from the record itself: its sampling seed is
(generate.seed, id), one stream per turn, and A(V)'s is (generate.augment.seed, id). A rerun
after a kill, or the record at another place in its batch, writes the same rows; another
batch size writes the same texts, with scores equal up to float32 rounding of the other batch
shape. The model is only built once a record is left to generate: a no-op rerun skips it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from typing import Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from flax import nnx

from leanpo_jax.data import augment as augment_lib
from leanpo_jax.data import records as records_lib
from leanpo_jax.data import video as video_lib
from leanpo_jax.data.batch import PAD_ID, batch_from_rows, pad_rows, position_table
from leanpo_jax.data.batching import bucket_interfaces, video_bucket_of
from leanpo_jax.data.contract import ModelInterface
from leanpo_jax.data.tokenize import ChatTokenizer
from leanpo_jax.generate import config as gen_config
from leanpo_jax.generate import report as report_lib
from leanpo_jax.generate.output import AppendOnlyJsonl
from leanpo_jax.generate.sampler import Sampler, SamplingConfig
from leanpo_jax.models.registry import ModelSource, family_of
from leanpo_jax.models.runtime import data_interface, model_source
from leanpo_jax.models.scoring import jitted_avg_logps


class RecordFailed(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def turn_seed(run_seed: int, record_id: str, turn: str) -> int:
    """The sampler seed of one record's turn ("first_turn", "reflection" or "loser"): a function
    of (run seed, id, turn) alone, so the record draws the same tokens in any batch, at any row,
    before or after a restart, and its turns draw independent streams."""
    return augment_lib.record_seed(augment_lib.record_seed(run_seed, record_id), turn)


def generation_source(config: ml_collections.ConfigDict) -> ModelSource:
    """config.model on the default device: init_from (an HF folder, e.g. the SFT export; it
    decides the family, frames, template and tokenizer) or the preset."""
    return model_source(config.model, jax.devices()[0].platform)


def build_or_load(source: ModelSource, seed: int):
    """The source's checkpoint weights, or the seeded random init of a preset."""
    return source.load() if source.folder is not None else source.build(int(seed))


def load_generation_model(config: ml_collections.ConfigDict):
    """-> (the frozen model, its data interface) that config.model names."""
    source = generation_source(config)
    return build_or_load(source, int(config.seed)), data_interface(source, config.data)


def chat_sampling_config(tok: ChatTokenizer, vocab_rows: int, *, max_new_tokens: int,
                         min_new_tokens: int = 1, **decoding) -> SamplingConfig:
    """Sampling for a chat answer: only the template's end-of-turn token may end it, no
    control / placeholder token is ever emitted, ids beyond the tokenizer (embedding padding
    rows) never are either."""
    banned = sorted(i for i, t in tok.tokenizer.get_added_tokens_decoder().items()
                    if t.special and i != tok.end_id and i < vocab_rows)
    return SamplingConfig(max_new_tokens=int(max_new_tokens), num_samples=1, stop_ids=(tok.end_id,),
                          vocab_limit=tok.tokenizer.get_vocab_size(with_added_tokens=True), pad_id=PAD_ID,
                          banned_ids=tuple(banned), min_new_tokens=min_new_tokens, **decoding)


class VideoBucket(NamedTuple):
    """One frame size of the run (data.video_buckets; the model's own without) as generation
    uses it: the model's interface at that size, its placeholder counts, its read arguments."""
    interface: ModelInterface
    n_video: int
    n_loser: int
    read_args: dict


class SelfGenerator:
    """Generates pairs for triplet files with one frozen model (see the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, model=None, tokenizer: Optional[ChatTokenizer] = None,
                 interface: Optional[ModelInterface] = None):
        """`model` (with `interface`, default: its family's for its config) replaces the one
        config.model names. That one is built (or loaded) by `run` when the first record needs
        generating, so `self.model` stays None on a run with nothing to generate. `tokenizer`
        replaces the interface's (or data.tokenizer)."""
        self.config, self.g = config, config.generate
        gen_config.check_generate_config(self.g)
        self._source = None
        if model is None:
            self._source = generation_source(config)
            model_config, interface = self._source.config, data_interface(self._source, config.data)
        else:
            model_config = model.config
            if interface is None:
                interface = family_of(model.config).interface(model.config)
        self.interface = interface
        if not interface.has_video:
            raise ValueError(f"self-generation needs a video model; {interface.source or 'the model'} has no "
                             "vision tower")
        self.tok = tokenizer or ChatTokenizer.for_model(interface, config.data.tokenizer or None)
        data = config.data
        self.frames = int(self.g.num_frames) if int(self.g.num_frames) != -1 else int(data.num_frames)
        self.score_frames = int(data.num_frames)
        self.keep = int(self.g.augment.keep_frames)
        # Each record is read at the bucket nearest its aspect ratio (its own vote) and batched
        # with records of the same bucket; frames are read as training reads them.
        self.buckets = [VideoBucket(b, b.video_tokens(self.frames), b.video_tokens(self.keep),
                                    video_lib.data_read_args(b.frames, data)) for b in bucket_interfaces(interface, data)]
        self._select(0)
        self.frame_policy = interface.frames
        family_defaults = family_of(model_config).decoding_defaults(model_config)
        self.decoding = {s: gen_config.resolved_decoding(self.g, s, family_defaults) for s in ("winner", "loser")}
        self.tokens_generated = 0
        self.model = self.winner_sampler = self.loser_sampler = None
        if model is not None:
            self._use_model(model)

    def _select(self, k: int) -> None:
        """Makes bucket k's interface and counts the ones the next batch is generated with."""
        self.interface, self.n_video, self.n_loser, self.read_args = self.buckets[k]

    def _bucket_of(self, path: str) -> int:
        if len(self.buckets) == 1:
            return 0
        return video_bucket_of([video_lib.probe_size(path)], [b.interface.frames.size for b in self.buckets])

    def _use_model(self, model) -> None:
        def sampler(side):
            # min_new_tokens 1: an empty response is not a usable pair side.
            return Sampler(model, chat_sampling_config(
                self.tok, self.interface.vocab_size, max_new_tokens=int(self.g.max_new_tokens),
                **self.decoding[side]))

        self.model = model
        self.winner_sampler, self.loser_sampler = sampler("winner"), sampler("loser")
        self._encode = nnx.jit(lambda m, f: m.encode_video(f))

    def _ensure_model(self) -> None:
        """Builds config.model's model on first use (a no-op rerun never pays for it)."""
        if self.model is None:
            self._use_model(build_or_load(self._source, int(self.config.seed)))

    # ------------------------------------------------------------------------ pieces
    def _normalise(self, frames: np.ndarray) -> jax.Array:
        return video_lib.normalize_frames(jnp.asarray(frames), self.frame_policy.mean, self.frame_policy.std)

    def _prompt(self, text: str, n_video: int) -> np.ndarray:
        try:
            ids = self.tok.prompt_ids(text, n_video)
        except ValueError as e:
            raise RecordFailed(records_lib.PLACEHOLDER_IN_TEXT, str(e)) from None
        if ids.shape[0] - n_video > int(self.g.max_prompt_text_tokens):
            raise RecordFailed(records_lib.PROMPT_TOO_LONG,
                               f"generation prompt has {ids.shape[0] - n_video} text tokens > "
                               f"generate.max_prompt_text_tokens={self.g.max_prompt_text_tokens}")
        return ids

    def _generate(self, sampler: Sampler, prompts: List[np.ndarray], video_embeds, n_video: int,
                  seeds: List[int], rates: List[float]):
        """Right-padded prompts (the batch padded to batch_size rows), a sampler seed and the
        video's sampled fps each -> decoded texts per prompt."""
        b = int(self.g.batch_size)
        rows = prompts + [prompts[0]] * (b - len(prompts))
        seeds = seeds + [seeds[0]] * (b - len(seeds))  # padding rows are discarded
        rates = rates + [rates[0]] * (b - len(rates))
        width = n_video + int(self.g.max_prompt_text_tokens)
        ids, mask = pad_rows(rows, width)
        positions = None  # the family's position table, if it has one
        if self.interface.positions_fn is not None:
            positions = position_table([self.interface.prompt_positions(r, f) for r, f in zip(rows, rates)], width)
        out = sampler.generate(ids, mask, video_embeds=video_embeds, seed=seeds, positions=positions)
        texts = []
        for i in range(len(prompts)):
            n = int(out.lengths[i, 0])
            self.tokens_generated += n + int(out.stopped[i, 0])
            texts.append(self.tok.tokenizer.decode(out.tokens[i, 0, :n].tolist(), skip_special_tokens=True).strip())
        return texts

    def _video_batch(self, frames: List[np.ndarray]) -> jax.Array:
        b = int(self.g.batch_size)
        stack = np.stack(frames + [frames[0]] * (b - len(frames)))
        return self._encode(self.model, self._normalise(stack))

    def _score(self, items: List[Dict]) -> List[Dict]:
        """Average log-probs of chosen, rejected and the GT under the model, as training sees them."""
        self._ensure_model()
        d = self.config.data
        n = self.interface.video_tokens(self.score_frames)
        names = ("chosen", "rejected", "answer")
        encoded = []
        for it in items:
            record = records_lib.PairRecord(it["id"], it["video"], it["prompt"], it["chosen"], it["rejected"], it["source"])
            try:
                enc = self.tok.encode_pair(record, num_video_tokens=n, max_prompt_text_tokens=int(d.max_prompt_text_tokens),
                                           max_response_tokens=int(d.max_response_tokens))
                enc["answer_ids"] = self.tok.response_ids(it["answer"], int(d.max_response_tokens))[0]
            except (records_lib.RecordError, ValueError) as e:
                enc = RecordFailed(getattr(getattr(e, "bad", None), "reason", "unencodable"), str(e))
            encoded.append(enc)
        ok = [i for i, e in enumerate(encoded) if not isinstance(e, RecordFailed)]
        scores = {}
        if ok:
            b, r = int(self.g.batch_size), int(d.max_response_tokens)
            rows = ok + [ok[0]] * (b - len(ok))
            prompts = [encoded[i]["prompt_ids"] for i in rows]
            fn = self.interface.positions_fn
            # The clip's length gives the sampled fps of a time-aware position table (None: unknown).
            rates = [None if items[i].get("duration_s") is None else self.score_frames / items[i]["duration_s"]
                     for i in rows]
            batch = batch_from_rows(
                "scored_pairs", prompts, {name: [encoded[i][f"{name}_ids"] for i in rows] for name in names},
                prompt_len=n + int(d.max_prompt_text_tokens), response_len=r,
                frames=np.stack([items[i]["score_frames"] for i in rows]),
                positions=None if fn is None else [fn(p, f) for p, f in zip(prompts, rates)])
            batch.pop("pair_weight")
            out = jax.device_get(jitted_avg_logps()(self.model, batch))
            for j, i in enumerate(ok):
                scores[i] = {f"{name}_avg_logp": float(out[f"{name}_avg"][j]) for name in names}
        return [scores.get(i, encoded[i]) for i in range(len(items))]

    def _turn(self, live, text, frames, sampler, n_video: int, seed, results: List[object], *,
              duration) -> Dict[int, str]:
        """One generation turn for records `live`: prompt `text(i)` over video `frames(i)`,
        sampled with seed `seed(i)`; the frames span `duration(i)` seconds of the clip (their
        sampled fps goes into a family's position table). A prompt that cannot be encoded becomes results[i]
        (RecordFailed) and drops out. -> {i: generated text}."""
        prompts = {}
        for i in live:
            try:
                prompts[i] = self._prompt(text(i), n_video)
            except RecordFailed as e:
                results[i] = e
        live = sorted(prompts)
        if not live:
            return {}
        videos = self._video_batch([frames(i) for i in live])
        rates = [None if duration(i) is None else len(frames(i)) / duration(i) for i in live]
        texts = self._generate(sampler, [prompts[i] for i in live], videos, n_video, [seed(i) for i in live], rates)
        return dict(zip(live, texts))

    def _process(self, batch: List[Dict]) -> List[object]:
        """Generation for up to batch_size readable records -> a row dict or RecordFailed each."""
        results: List[object] = [None] * len(batch)
        frames = lambda i: batch[i]["frames"]  # noqa: E731
        duration = lambda i: batch[i].get("duration_s")  # noqa: E731

        def seed(turn):
            return lambda i: turn_seed(int(self.g.seed), batch[i]["id"], turn)

        r1 = self._turn(range(len(batch)), lambda i: self.g.prior_template.format(
            answer=batch[i]["answer"], question=batch[i]["prompt"]), frames, self.winner_sampler, self.n_video,
            seed("first_turn"), results, duration=duration)
        winners = self._turn(sorted(r1), lambda i: self.g.reflection_template.format(
            first_turn=r1[i], answer=batch[i]["answer"], question=batch[i]["prompt"]), frames,
            self.winner_sampler, self.n_video, seed("reflection"), results, duration=duration)
        augmented, params = {}, {}
        for i in sorted(winners):
            it = batch[i]
            augmented[i], params[i] = augment_lib.augment_video(
                it["frames"], self.g.augment, seed=augment_lib.record_seed(int(self.g.augment.seed), it["id"]))
        losers = self._turn(sorted(winners), lambda i: batch[i]["prompt"], lambda i: augmented[i],
                            self.loser_sampler, self.n_loser, seed("loser"), results, duration=duration)
        live = sorted(losers)
        for i in list(live):
            empty = [side for side, text in (("chosen", winners[i]), ("rejected", losers[i])) if not text]
            if empty:  # the training reader would skip it: report it here instead
                results[i] = RecordFailed("empty_generation", f"the generated {' and '.join(empty)} "
                                          "is empty or whitespace only")
                live.remove(i)
        if not live:
            return results
        items = [dict(batch[i], first_turn=r1[i], chosen=winners[i], rejected=losers[i]) for i in live]
        for i, it, score in zip(live, items, self._score(items)):
            if isinstance(score, RecordFailed):
                results[i] = score
                continue
            if not self.g.score_answer:
                score.pop("answer_avg_logp")
            results[i] = {"id": it["id"], "video": it["video"], "prompt": it["prompt"], "chosen": it["chosen"],
                          "rejected": it["rejected"], "first_turn": it["first_turn"], **score,
                          "identical": it["chosen"] == it["rejected"], "augment": params[i].to_json()}
        return results

    # ------------------------------------------------------------------------ the run
    def run(self, input_path: str, output_path: str, *, video_root: str = "", progress: bool = True) -> Dict:
        """Generates a row for every triplet of `input_path` not yet in `output_path`; returns
        the report (also written to OUTPUT.report.json unless nothing new was written). Its
        `attempted_this_run` counts the records sent to the model (0: nothing was left to do,
        and the model was not built)."""
        video_root = video_root or os.path.dirname(os.path.abspath(input_path))
        source = records_lib.RecordSource(os.path.abspath(input_path), "triplets")
        out = AppendOnlyJsonl(output_path)
        stem = output_path[:-6] if output_path.endswith(".jsonl") else output_path
        failed_path = stem + ".failed.jsonl"
        failures: Counter = Counter()
        written, attempted, started = 0, 0, time.perf_counter()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(source), initial=0, desc="generate", unit="rec", dynamic_ncols=True)
        with open(failed_path, "w", encoding="utf-8") as failed_file:
            def fail(source_at, record_id, reason, detail):
                failures[reason] += 1
                entry = {"source": source_at, "id": record_id, "reason": reason, "detail": detail}
                failed_file.write(json.dumps(entry) + "\n")
                failed_file.flush()
                print(f"leanpo-generate: skipped {source_at} id={record_id!r}: {reason}: {detail}",
                      file=sys.stderr, flush=True)

            pending_by_bucket: Dict[int, List[Dict]] = {k: [] for k in range(len(self.buckets))}

            def flush_pending(k: int):
                nonlocal written
                pending = pending_by_bucket[k]
                if not pending:
                    return
                self._select(k)
                try:
                    results = self._process(pending)
                except Exception as e:  # noqa: BLE001  a generation error fails the batch, not the run
                    results = [RecordFailed("generation_error", f"{type(e).__name__}: {e}")] * len(pending)
                for it, res in zip(pending, results):
                    if isinstance(res, RecordFailed):
                        fail(it["source"], it["id"], res.reason, res.detail)
                    else:
                        out.append(res)
                        written += 1
                if bar is not None:
                    bar.update(len(pending))
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(rec_s=f"{written / elapsed:.2f}", tok_s=f"{self.tokens_generated / elapsed:.1f}",
                                    refresh=False)
                pending.clear()

            for j in range(len(source)):
                record = source[j]
                if isinstance(record, records_lib.BadRecord):
                    fail(record.source, record.id, record.reason, record.detail)
                    bar is not None and bar.update(1)
                    continue
                if record.id in out.done:
                    bar is not None and bar.update(1)
                    continue
                path = os.path.join(video_root, record.video)
                k = self._bucket_of(path)
                read_args = self.buckets[k].read_args
                try:
                    frames, info = video_lib.read_video(path, self.frames, **read_args)
                    score_frames = frames if self.score_frames == self.frames else video_lib.read_video(
                        path, self.score_frames, **read_args)[0]
                except video_lib.VideoError as e:
                    fail(record.source, record.id, e.reason, f"video {path!r}: {e.detail}")
                    bar is not None and bar.update(1)
                    continue
                # Built here, outside flush_pending's per-batch error handling: a model that
                # cannot load stops the run instead of failing every record.
                self._ensure_model()
                attempted += 1
                pending_by_bucket[k].append({"id": record.id, "video": record.video, "prompt": record.prompt,
                                "answer": record.answer, "source": record.source, "frames": frames,
                                "score_frames": score_frames, "duration_s": info.duration_s})
                if len(pending_by_bucket[k]) == int(self.g.batch_size):
                    flush_pending(k)
            for k in pending_by_bucket:
                flush_pending(k)
        if bar is not None:
            bar.close()
        out.close()
        report = report_lib.build_report(out.rows, failed=sum(failures.values()), failed_by_reason=failures)
        report.update({"written_this_run": written, "attempted_this_run": attempted,
                       "seconds": round(time.perf_counter() - started, 2), "tokens_generated": self.tokens_generated,
                       "decoding": self.decoding, "repaired_bytes": out.repaired_bytes})
        report_path = stem + ".report.json"
        if written or not os.path.exists(report_path):
            with open(report_path, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
            if self.g.filter_winner_gt_loser:
                with open(stem + ".filtered.jsonl", "w", encoding="utf-8") as f:
                    for row in out.rows:
                        if row["chosen_avg_logp"] > row["rejected_avg_logp"]:
                            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return report
