"""Grain pipeline: JSONL records -> decoded frames + chat-template ids -> static-shape batches.

    pipe = DataPipeline(config.data, model=interface, train=True, workdir=workdir)
    for batch in pipe: ...                       # dict of numpy arrays, shapes below
    state = pipe.get_state()                     # JSON-serialisable, saved with the checkpoint
    DataPipeline(config.data, model=interface, train=True, workdir=workdir).set_state(state)

`interface` is the model's `contract.ModelInterface` (`leanpo_jax.models.resolve_model(...)
.interface()`): the frame policy, video-token count, template and tokenizer come from it.
Batch (data/batch.py; B = data.batch_size per host, F frames of H x W, N = video tokens(F);
with data.video_buckets, H x W, N and P are those of the step's bucket, batching.video_bucket_of):
    frames          uint8 [B, F, H, W, 3]    (video models; normalised inside the train step)
    prompt_ids      int32 [B, P]             P = N + max_prompt_text_tokens, one static value
    prompt_mask     int32 [B, P]             RIGHT padding: ones then zeros
    prompt_lengths  int32 [B]                responses start at this position in each row
    chosen_ids / chosen_mask, rejected_ids / rejected_mask   int32 [B, R]  (kind "pairs")
    answer_ids / answer_mask                                 int32 [B, R]  (kind "triplets")
    prompt_positions int32 [B, P] / [B, A, P] (families with a position table only)
    pair_weight     float32 [B]              1 = a real record, 0 = a padding row
    record_index    int32 [B]                line index in the JSONL source (-1: padding)
R is the smallest of `response_buckets` that fits the longest (truncated) response of the
step's GLOBAL window, so the train step compiles at most once per (P, R).

How a step is formed (the one rule every host follows without talking to the others):
  the global order is the source's line indices, shuffled by grain (a new permutation each
  epoch) in training; step k covers the window of G = B * process_count consecutive positions
  [k G, (k + 1) G); host h decodes positions k G + h B + [0, B). R is computed from a cheap text
  pass (parse + tokenise, no video) over the whole window, so every host picks the same R.
  A bad record is an in-band marker: its slot becomes a zero-weight padding row (no backfill,
  because backfilling would make a host's batch depend on failures other hosts cannot see),
  and the main process counts it by reason, lists it in WORKDIR/skipped_records.jsonl, and
  ("error" policy) raises RecordError naming it. Training drops the last partial window;
  eval pads it with zero-weight rows. Padding rows are valid, finite inputs (a real template
  prompt with N placeholders, a one-token response, zero frames), so the loss stays finite
  and `pair_weight` removes them: the train step must weight pairs by `pair_weight`.
Accounting: records = ok + sum(skipped) + dropped_remainder (summed over hosts).

Workers: `num_workers` grain processes (mp_prefetch) each build whole steps. A worker that
raises surfaces as that exception in the main process; a worker killed by a signal surfaces as
grain's RuntimeError("Worker process was terminated unexpectedly ...") after grain's queue
timeout, never a hang (tested). grain starts workers with "spawn": a script that uses workers
needs the `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Optional

import grain
import ml_collections
import numpy as np

from leanpo_jax.data import records as records_lib
from leanpo_jax.data import tokenize as tokenize_lib
from leanpo_jax.data.batching import (  # noqa: F401  (re-exported: the pipeline's public names)
    KINDS, PAD_ID, BatchSpec, ExampleMaker, StepMaker, config_error, response_names, empty_batch,
    make_tokenizer, resolve_spec, resolve_video_root, response_length, video_bucket_of,
)
from leanpo_jax.data.contract import ModelInterface
from leanpo_jax.jsonl_files import read_jsonl, repair_torn_tail

SKIPPED_FILENAME = "skipped_records.jsonl"
STATE_VERSION = 1
# Grain read threads per process and batches buffered ahead (batches can be tens of MB).
READ_THREADS = 2
PREFETCH = 2


class DataPipeline:
    """The training / eval iterator over one JSONL file: static-shape batches (module docstring).

    train=True: shuffled by data.shuffle_seed, data.num_epochs epochs, last partial window
    dropped. train=False (eval, the checker): file order, one epoch, last window padded.
    process_index / process_count default to jax's (pass them to simulate hosts in tests).
    Skipped records are appended to `skipped_path` (default WORKDIR/skipped_records.jsonl,
    ".processH" inserted on multi-host; None without a workdir). Not thread-safe.
    """

    def __init__(self, data: ml_collections.ConfigDict, *, model: ModelInterface, train: bool,
                 workdir: Optional[str] = None, process_index: Optional[int] = None,
                 process_count: Optional[int] = None,
                 tokenizer: Optional[tokenize_lib.ChatTokenizer] = None,
                 skipped_path: Optional[str] = None):
        self.spec = resolve_spec(data, model)
        if not data.pairs:
            raise ValueError("config data.pairs is empty: set it to a JSONL file of records "
                             "(--config.data.pairs=FILE)")
        if process_index is None or process_count is None:
            import jax  # pylint: disable=import-outside-toplevel
            process_index, process_count = jax.process_index(), jax.process_count()
        self.host, self.num_hosts = int(process_index), int(process_count)
        if not 0 <= self.host < self.num_hosts:
            raise ValueError(f"process_index {self.host} outside [0, process_count={self.num_hosts})")
        self.train, self.on_bad_record = bool(train), data.on_bad_record
        self.num_workers = int(data.num_workers)
        self.tokenizer = tokenizer or make_tokenizer(data, model)
        self.source = records_lib.RecordSource(os.path.abspath(data.pairs), data.kind)
        positions = grain.MapDataset.range(len(self.source))
        if self.train and len(self.source):
            # grain reseeds the shuffle with the epoch index, so each epoch is a new permutation.
            positions = positions.shuffle(seed=int(data.shuffle_seed)).repeat(int(data.num_epochs))
        self.records_total = len(positions)
        g = self.spec.batch_size * self.num_hosts
        self.num_steps = self.records_total // g if self.train else -(-self.records_total // g)
        self.dropped_remainder = self.records_total - self.num_steps * g if self.train else 0
        makers = [ExampleMaker(spec, self.tokenizer, resolve_video_root(data)) for spec in self.spec.buckets]
        self._steps_fn = StepMaker(positions, grain.MapDataset.source(self.source), makers, host=self.host,
                                   num_hosts=self.num_hosts,
                                   pad_examples=[self._pad_example(spec) for spec in self.spec.buckets])
        self._fingerprint = {
            "lines": len(self.source), "kind": self.spec.kind, "records": self.records_total,
            "batch_size": self.spec.batch_size,
            "process_index": self.host, "process_count": self.num_hosts, "train": self.train,
            "shuffle_seed": int(data.shuffle_seed) if self.train else None,
        }
        if self.spec.variants:  # the buckets decide each step's frames: resuming needs the same ones
            self._fingerprint["video_buckets"] = list(data.video_buckets)
        if skipped_path is None and workdir:
            name = SKIPPED_FILENAME if self.num_hosts == 1 else SKIPPED_FILENAME.replace(
                ".jsonl", f".process{self.host}.jsonl")
            skipped_path = os.path.join(workdir, name)
        self.skipped_path = skipped_path
        self.first_skipped: list = []  # a few BadRecords for summaries (not part of the state)
        self._it = None
        self._counts = {"next_step": 0, "skipped": {}, "ok": 0, "padding": 0, "truncated": 0, "video_sizes": {}}

    def _pad_example(self, spec: BatchSpec) -> dict:
        """A valid, finite stand-in row of `spec` (a video bucket): the template around an empty
        question, the end token."""
        prompt = self.tokenizer.prompt_ids("", spec.num_video_tokens)
        text = int(prompt.shape[0]) - spec.num_video_tokens
        if text > spec.max_prompt_text_tokens:
            config_error("max_prompt_text_tokens", spec.max_prompt_text_tokens,
                  f"the chat template alone takes {text} text tokens; raise it well above that")
        response = np.asarray([self.tokenizer.end_id], np.int32)
        example = {"prompt_ids": prompt, **{f"{n}_ids": response for n in response_names(spec.kind)}}
        if spec.positions_fn is not None:
            example["prompt_positions"] = np.asarray(spec.positions_fn(prompt, None), np.int32)
        return example

    @property
    def next_step(self) -> int:
        """The global step the next batch belongs to (= batches consumed so far)."""
        return self._counts["next_step"]

    def step_bucket(self, step: int) -> int:
        """The response bucket R of global step `step` (the same on every host)."""
        return self._steps_fn.bucket(step)

    def _iterator(self):
        ds = grain.MapDataset.range(self.next_step, self.num_steps).map(self._steps_fn)
        # Few threads and a short buffer: a 64-frame 384^2 batch is tens of MB.
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH))
        if self.num_workers:
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers))
        return iter(ds)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.next_step >= self.num_steps:
            self.close()
            raise StopIteration
        if self._it is None:
            self._it = self._iterator()
        try:
            batch = next(self._it)
        except Exception:  # a worker's exception or death: stop the other workers too
            self.close()
            raise
        meta = json.loads(batch.pop("_meta"))
        if meta["step"] != self.next_step:
            raise RuntimeError(f"data pipeline out of order: step {meta['step']}, expected {self.next_step}")
        bads = [records_lib.BadRecord(**d) for d in meta["skipped"]]
        if bads and self.on_bad_record == "error":
            self.close()
            raise records_lib.RecordError(bads[0])
        self._log_skipped(meta["step"], bads)
        counts = self._counts
        counts["skipped"] = dict(Counter(counts["skipped"]) + Counter(b.reason for b in bads))
        for key in ("ok", "padding", "truncated"):
            counts[key] += meta[key]
        if meta["video_size"] is not None:
            counts["video_sizes"][meta["video_size"]] = counts["video_sizes"].get(meta["video_size"], 0) + 1
        counts["next_step"] += 1
        return batch

    def _log_skipped(self, step: int, bads: list) -> None:
        self.first_skipped.extend(bads[: max(0, 20 - len(self.first_skipped))])
        if bads and self.skipped_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.skipped_path)), exist_ok=True)
            with open(self.skipped_path, "a", encoding="utf-8") as f:
                for bad in bads:
                    f.write(json.dumps({"step": step, **bad.to_json()}) + "\n")

    def get_state(self) -> dict:
        """JSON-serialisable state: the next step, the counts so far and a fingerprint."""
        return {"version": STATE_VERSION, **json.loads(json.dumps(self._counts)),
                "fingerprint": dict(self._fingerprint)}

    def set_state(self, state: dict) -> None:
        """Resumes at state["next_step"] with its counts (the next batches are exactly those an
        uninterrupted run would give). Entries of the skipped-records file from steps at or after
        the restored step are removed (they will be reported again when read again)."""
        if state.get("version") != STATE_VERSION or state.get("fingerprint") != self._fingerprint:
            raise ValueError(
                f"data iterator state does not match this pipeline: saved {state.get('fingerprint')}, "
                f"now {self._fingerprint}. Resume with the same data file, batch_size, shuffle_seed, "
                "num_epochs and process count, or start the data from scratch")
        self.close()
        # States saved before per-bucket counts existed lack "video_sizes": it starts empty.
        self._counts = {k: json.loads(json.dumps(state.get(k, {} if k == "video_sizes" else state[k])))
                        for k in self._counts}
        if self.skipped_path and os.path.exists(self.skipped_path):
            repair_torn_tail(self.skipped_path)  # a kill mid-append tears the last line only
            keep = [row for row in read_jsonl(self.skipped_path) if row["step"] < self.next_step]
            with open(self.skipped_path, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row) + "\n" for row in keep)

    def stats(self) -> dict:
        """Accounting of this host so far; after a full pass (summed over hosts):
        records == ok + sum(skipped) + dropped_remainder."""
        c = self._counts
        return {"records": self.records_total, "steps": self.num_steps, "steps_done": c["next_step"],
                "ok": c["ok"], "skipped": dict(c["skipped"]), "padding_rows": c["padding"],
                "dropped_remainder": self.dropped_remainder, "truncated_responses": c["truncated"],
                "steps_per_video_size": dict(c["video_sizes"])}

    def close(self) -> None:
        """Stops worker processes (also on garbage collection, but do not rely on it)."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
