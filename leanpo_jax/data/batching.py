"""Records -> examples -> one host's static-shape batch of a step (the per-step map).

`resolve_spec` turns the `data` config and the model's `contract.ModelInterface` into the
static shapes (P, the response buckets, B) and the frame policy,
`ExampleMaker` decodes and tokenises one record (or returns its in-band BadRecord),
`StepMaker` forms a host's batch of global step k, choosing R over the whole global window
(and, with several video buckets, the step's frame size: `video_bucket_of`).
`DataPipeline` (pipeline.py) drives them through grain; batch fields: pipeline.py's docstring.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Callable, Optional, Union

import ml_collections
import numpy as np

from leanpo_jax.data import records as records_lib
from leanpo_jax.data import tokenize as tokenize_lib
from leanpo_jax.data import video as video_lib
from leanpo_jax.data.batch import PAD_ID, make_batch, response_names
from leanpo_jax.data.config import check_data_config, video_bucket_sizes
from leanpo_jax.data.contract import FramePolicy, ModelInterface
from leanpo_jax.data.records import KINDS


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """Static shapes of one batch, resolved and validated from a data config."""

    kind: str
    batch_size: int
    num_frames: int
    frames: Optional[FramePolicy]  # None: a text-only model (no frames decoded or batched)
    num_video_tokens: int
    video_token_index: Optional[int]
    max_prompt_text_tokens: int
    response_buckets: tuple
    max_response_tokens: int
    positions_fn: Optional[Callable] = None  # the family's prompt position table, if any
    position_axes: int = 0  # 0: no table; 1: prompt_positions [B, P]; A > 1: [B, A, P]
    frame_sampling: str = "time"  # data.frame_sampling: how read_video picks the F frames
    fps_sampling: float = 0.0  # data.fps_sampling (0 = uniform F frames), by frames.fps_rule
    min_frames: int = 4  # data.min_frames (the Qwen fps rule)
    # The spec of each video bucket (data.video_buckets), this one first; () = one frame size.
    variants: tuple = ()

    @property
    def buckets(self) -> tuple:
        """The spec of every frame size a step may take (just this one without video buckets)."""
        return self.variants or (self,)

    @property
    def prompt_len(self) -> int:
        return self.num_video_tokens + self.max_prompt_text_tokens

    def read_args(self) -> dict:
        """`video.read_video` keyword arguments (frame policy + the data block's sampling)."""
        return video_lib.data_read_args(self.frames, self)

    def bucket(self, length: int) -> int:
        """The smallest response bucket R >= length (length <= max_response_tokens)."""
        return next(r for r in self.response_buckets if length <= r)


def config_error(key: str, value, rule: str):
    raise ValueError(f"config data.{key}={value!r}: {rule}")


def resolve_spec(data: ml_collections.ConfigDict, model: ModelInterface) -> BatchSpec:
    """Validates the data config's ranges and returns the batch shapes it implies for `model`
    (its frame policy and video-token count); with data.video_buckets, the spec of the first
    bucket carrying every bucket's spec in `variants`."""
    check_data_config(data)  # every key's type and range (data/config.py), unknown keys refused
    if not data.video_buckets:
        return _spec(data, model)
    variants = tuple(_spec(data, bucket) for bucket in bucket_interfaces(model, data))
    return dataclasses.replace(variants[0], variants=variants)


def bucket_interfaces(model: ModelInterface, data: ml_collections.ConfigDict) -> list:
    """`model` at each size of data.video_buckets (`ModelInterface.at_size`), or [model] without
    buckets. Refused (naming the key): buckets for a model without video, or two buckets of one
    aspect ratio (the vote is by aspect ratio alone: the later one would never be chosen)."""
    sizes = video_bucket_sizes(data)
    if not sizes:
        return [model]
    if not model.has_video:
        config_error("video_buckets", tuple(data.video_buckets), f"{model.source or model.family} has no video input")
    ratios = {}
    for size in sizes:
        ratio = round(size[1] / size[0], 9)
        if ratio in ratios:
            config_error("video_buckets", tuple(data.video_buckets), f"{ratios[ratio]} and {size} have the same "
                         "aspect ratio; keep one size per aspect ratio")
        ratios[ratio] = size
    return [model.at_size(size) for size in sizes]


def _spec(data: ml_collections.ConfigDict, model: ModelInterface) -> BatchSpec:
    buckets = tuple(int(r) for r in data.response_buckets)
    if model.has_video:
        model.frames.check_frames(int(data.num_frames))
    axes = 0
    if model.positions_fn is not None:  # its shape on a one-token prompt: [1] or [A, 1]
        probe = np.asarray(model.prompt_positions(np.zeros(1, np.int32)))
        axes = 1 if probe.ndim == 1 else int(probe.shape[0])
    return BatchSpec(
        kind=data.kind, batch_size=int(data.batch_size), num_frames=int(data.num_frames),
        frames=model.frames, num_video_tokens=model.video_tokens(int(data.num_frames)),
        video_token_index=model.video_token_index,
        max_prompt_text_tokens=int(data.max_prompt_text_tokens), response_buckets=buckets,
        max_response_tokens=int(data.max_response_tokens), positions_fn=model.positions_fn,
        position_axes=axes, frame_sampling=data.frame_sampling, fps_sampling=float(data.fps_sampling),
        min_frames=int(data.min_frames),
    )


def video_bucket_of(sizes, buckets) -> int:
    """The video bucket of a step: each known source size (H, W) (None: unknown, no vote) votes
    for the bucket (H', W') nearest in aspect ratio, |log((W / H) / (W' / H'))|; the most votes
    win, ties (and a window without votes) going to the earlier bucket. A pure function of the
    window's files, so every host that reads the same window picks the same bucket."""
    votes = [0] * len(buckets)
    for size in sizes:
        if size is None:
            continue
        h, w = size
        gaps = [abs(math.log((w / h) / (bw / bh))) for bh, bw in buckets]
        votes[gaps.index(min(gaps))] += 1
    return votes.index(max(votes))


def make_tokenizer(data: ml_collections.ConfigDict, model: ModelInterface) -> tokenize_lib.ChatTokenizer:
    """The model's ChatTokenizer: data.tokenizer when set, else the model's own tokenizer."""
    return tokenize_lib.ChatTokenizer.for_model(model, data.tokenizer or None)


def resolve_video_root(data: ml_collections.ConfigDict) -> str:
    """data.video_root, or the JSONL file's folder when it is ""."""
    return data.video_root or os.path.dirname(os.path.abspath(data.pairs))


class ExampleMaker:
    """The per-record map: a record -> a model-ready example, or a BadRecord marker (in-band).

    Two halves so that the text pass can run alone: `encode` (tokens: cheap) and `with_frames`
    (video decoding: expensive). Never raises for bad data (RecordError / VideoError become
    markers, so a worker never dies of a bad record); other exceptions are bugs and propagate.
    Picklable (grain workers).
    """

    def __init__(self, spec: BatchSpec, tokenizer: tokenize_lib.ChatTokenizer, video_root: str):
        self.spec, self.tokenizer, self.video_root = spec, tokenizer, video_root

    def encode(self, record) -> Union[dict, records_lib.BadRecord]:
        """Chat-template ids of a record (`ChatTokenizer.encode_record`), or its BadRecord."""
        if isinstance(record, records_lib.BadRecord):
            return record
        s = self.spec
        try:
            encoded = self.tokenizer.encode_record(
                record, num_video_tokens=s.num_video_tokens,
                max_prompt_text_tokens=s.max_prompt_text_tokens, max_response_tokens=s.max_response_tokens)
        except records_lib.RecordError as e:
            return e.bad
        return encoded

    def with_frames(self, record, encoded) -> Union[dict, records_lib.BadRecord]:
        """`encoded` plus "frames" uint8 [F, H, W, 3] decoded from the record's video (video
        models only) and "prompt_positions" (families with a position table: it may depend on the
        video's sampled frame rate, Qwen2.5-VL's time axis, hence computed after decoding)."""
        if isinstance(encoded, records_lib.BadRecord):
            return encoded
        if self.spec.frames is None:
            return self._with_positions(encoded, None)
        path = os.path.join(self.video_root, record.video)
        try:
            frames, info = video_lib.read_video(path, self.spec.num_frames, **self.spec.read_args())
        except video_lib.VideoError as e:
            return records_lib.BadRecord(record.source, record.id, e.reason, f"video {path!r}: {e.detail}")
        return self._with_positions({**encoded, "frames": frames}, info.sampled_fps)

    def _with_positions(self, example: dict, sampled_fps: Optional[float]) -> dict:
        if self.spec.positions_fn is not None:
            example["prompt_positions"] = np.asarray(self.spec.positions_fn(example["prompt_ids"], sampled_fps),
                                                     np.int32)
        return example

    def __call__(self, record) -> Union[dict, records_lib.BadRecord]:
        return self.with_frames(record, self.encode(record))


def response_length(encoded) -> int:
    """Longest (truncated) response of an encoded record in tokens; 0 for a BadRecord."""
    if isinstance(encoded, records_lib.BadRecord):
        return 0
    return max(int(v.shape[0]) for k, v in encoded.items() if k.endswith("_ids") and k != "prompt_ids")


def empty_batch(spec: BatchSpec, r: int) -> dict:
    """An all-padding batch with response bucket `r`: the exact shapes and dtypes of a batch
    (also handy to compile every (P, R) bucket ahead of time). Weights 0, masks 0."""
    b, p = spec.batch_size, spec.prompt_len
    fields = {"prompt_ids": np.full((b, p), PAD_ID, np.int32), "prompt_mask": np.zeros((b, p), np.int32),
              "prompt_lengths": np.zeros((b,), np.int32), "pair_weight": np.zeros((b,), np.float32),
              "record_index": np.full((b,), -1, np.int32)}
    if spec.frames is not None:
        fields["frames"] = np.zeros((b, spec.num_frames, *spec.frames.size, 3), np.uint8)
    if spec.position_axes:
        axes = () if spec.position_axes == 1 else (spec.position_axes,)
        fields["prompt_positions"] = np.zeros((b, *axes, p), np.int32)
    for n in response_names(spec.kind):
        fields[f"{n}_ids"] = np.full((b, r), PAD_ID, np.int32)
        fields[f"{n}_mask"] = np.zeros((b, r), np.int32)
    return make_batch(spec.kind, **fields)


class StepMaker:
    """The per-step map (runs in grain workers): step k -> this host's batch of step k.

    `positions` is the global order (a grain MapDataset of source line positions: shuffled and
    repeated in training), `records` the grain MapDataset over the RecordSource; `makers` and
    `pad_examples` hold one ExampleMaker / padding row per video bucket (`BatchSpec.buckets`).
    Output: the batch arrays plus "_meta", a JSON string {"step", "skipped": [BadRecord dicts],
    "ok", "padding", "truncated", "video_size"} that the main process consumes (markers travel
    in-band).
    """

    def __init__(self, positions, records, makers, *, host: int, num_hosts: int, pad_examples):
        self.positions, self.records = positions, records
        self.makers, self.pad_examples = list(makers), list(pad_examples)
        self.spec = self.makers[0].spec
        self.host, self.num_hosts = host, num_hosts

    def _window(self, step: int):
        """(video bucket k, {global order position: (source line position, record, encoded)}) of
        step `step`'s whole global window (all hosts' rows): the cheap pass (text, and with
        several buckets the videos' header sizes)."""
        g = self.spec.batch_size * self.num_hosts
        rows = {}
        for pos in range(step * g, min((step + 1) * g, len(self.positions))):
            line = int(self.positions[pos])
            rows[pos] = (line, self.records[line])
        k = 0
        if len(self.makers) > 1:
            root = self.makers[0].video_root
            sizes = [None if isinstance(r, records_lib.BadRecord) else video_lib.probe_size(os.path.join(root, r.video))
                     for _, r in rows.values()]
            k = video_bucket_of(sizes, [m.spec.frames.size for m in self.makers])
        maker = self.makers[k]
        return k, {pos: (line, record, maker.encode(record)) for pos, (line, record) in rows.items()}

    def bucket(self, step: int, window: Optional[tuple] = None) -> int:
        """The response bucket R of step `step`: a function of the global window's text only
        (records whose video fails still count), hence the same on every host."""
        _, rows = self._window(step) if window is None else window
        return self.spec.bucket(max([response_length(e) for _, _, e in rows.values()] + [1]))

    def __call__(self, step: int) -> dict:
        window = self._window(step)
        k, rows = window
        maker, pad_example = self.makers[k], self.pad_examples[k]
        batch = empty_batch(maker.spec, self.bucket(step, window))
        names = response_names(self.spec.kind)
        size = None if maker.spec.frames is None else "{}x{}".format(*maker.spec.frames.size)
        meta = {"step": int(step), "skipped": [], "ok": 0, "padding": 0, "truncated": 0, "video_size": size}
        b = self.spec.batch_size
        start = step * b * self.num_hosts + self.host * b
        for row, pos in enumerate(range(start, start + b)):
            if pos not in rows:  # past the end of the data (eval): a padding row
                meta["padding"] += 1
                example = pad_example
            else:
                line, record, encoded = rows[pos]
                example = maker.with_frames(record, encoded)
                if isinstance(example, records_lib.BadRecord):  # a hole: zero weight, reported
                    meta["skipped"].append(example.to_json())
                    example = pad_example
                else:
                    meta["ok"] += 1
                    meta["truncated"] += sum(bool(example[f"{n}_truncated"]) for n in names)
                    batch["pair_weight"][row] = 1.0
                    batch["record_index"][row] = line
            _fill_row(batch, row, example, names)
        batch["_meta"] = json.dumps(meta)
        return batch


def _fill_row(batch: dict, row: int, example: dict, names: tuple) -> None:
    """Writes one example left-aligned (right padding) into row `row` of the batch."""
    prompt = example["prompt_ids"]
    batch["prompt_ids"][row, : prompt.shape[0]] = prompt
    batch["prompt_mask"][row, : prompt.shape[0]] = 1
    batch["prompt_lengths"][row] = prompt.shape[0]
    if "frames" in example:
        batch["frames"][row] = example["frames"]
    if "prompt_positions" in example:
        batch["prompt_positions"][row, ..., : prompt.shape[0]] = example["prompt_positions"]
    for n in names:
        ids = example[f"{n}_ids"]
        batch[f"{n}_ids"][row, : ids.shape[0]] = ids
        batch[f"{n}_mask"][row, : ids.shape[0]] = 1
