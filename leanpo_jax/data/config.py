"""The `data` block of every configuration, declared key by key (default, range, one-line doc).

It lives in the package (not only in configs/) so that the dataset checker has the same
defaults from any working directory. The model (model.preset, or the checkpoint at
model.init_from) decides frame size, video-token count and template; nothing here names it.

    data = data_config()                 # the ml_collections defaults
    check_data_config(data)              # ValueError "config data.KEY=VALUE: expected ..."
"""

import re

import ml_collections

from leanpo_jax.config_schema import Block, Field
from leanpo_jax.data.records import KINDS
from leanpo_jax.data.video_contract import FRAME_SAMPLING_MODES


_SIZE = re.compile(r"[1-9][0-9]*x[1-9][0-9]*")


def video_bucket_sizes(data) -> tuple:
    """data.video_buckets as ((H, W), ...) ints (validated by DATA: "HxW" strings)."""
    return tuple(tuple(int(x) for x in s.split("x")) for s in data.video_buckets)


def _ascending(buckets) -> bool:
    return len(buckets) > 0 and list(buckets) == sorted(set(buckets)) and buckets[0] >= 1


DATA = Block(
    "the data pipeline (pipeline.py: records -> static-shape batches)",
    pairs=Field("", 'JSONL of records; "" = none yet (set it on the command line: --config.data.pairs=FILE)'),
    video_root=Field("", 'Folder that the records\' `video` paths are relative to; "" = the JSONL file\'s folder'),
    kind=Field("pairs", '"pairs" {id, video, prompt, chosen, rejected} | "triplets" {id, video, prompt, answer}',
               choices=KINDS),
    num_frames=Field(4, "F frames per video, uniform indices linspace(0, n-1, F) (see frame_sampling); "
                     "N = num_video_tokens(F)", rule=">= 1"),
    frame_sampling=Field("time", '"time": on a variable-frame-rate stream, F frames uniform in presentation '
                         'time (the frame on screen at each of linspace(t_first, t_last, F)); "index": by frame '
                         "index, as LLaVA's / Qwen's readers do on every stream. Constant-rate streams: the "
                         "same indices either way", choices=FRAME_SAMPLING_MODES),
    fps_sampling=Field(0.0, "0 = num_frames frames uniform over the clip; > 0: sample at this rate (frames/s) "
                       "by the model's rule (Qwen-VL: qwen-vl-utils' count, round(duration x rate) to an even "
                       "number in [data.min_frames, source frames], Qwen's recipe uses 2.0; LLaVA: every "
                       "round(fps / rate)-th frame), over num_frames sub-sampled uniformly to it (lmms-eval's "
                       "max_num_frames), under it stretched to it by repeats (one static F)", rule=">= 0"),
    min_frames=Field(4, "With data.fps_sampling and the Qwen-VL rule: the least frames sampled (qwen-vl-utils' "
                     "FPS_MIN_FRAMES)", rule=">= 1"),
    video_buckets=Field((), 'Frame sizes "HxW" this run may use, e.g. ("448x448", "336x588", "588x336") '
                        "(models that take several sizes: Qwen-VL, multiples of 28); () = the model's own size. "
                        "Each step takes the bucket nearest in aspect ratio to most videos of its global window "
                        "(ties: the earlier bucket; the same on every host): one compile per bucket",
                        type=(str,), check=lambda b: all(_SIZE.fullmatch(s) for s in b) and len(set(b)) == len(b),
                        rule='distinct "HxW" strings, e.g. "448x448"'),
    max_prompt_text_tokens=Field(64, "Prompt text tokens beyond the N video ids; P = N + this is the one "
                                 "static prompt length (longer prompts: bad records, never truncated)",
                                 rule=">= 1"),
    padding_side=Field("right", "Prompt ids left-aligned, masked after each row's true length "
                       "(`prompt_lengths`); responses start at that length", choices=("right",)),
    response_buckets=Field((16, 32, 64), "Static response lengths R; a batch uses the smallest R that "
                           "fits its longest response (at most one compile per (P, R))",
                           check=_ascending, rule="distinct ascending values >= 1"),
    max_response_tokens=Field(64, "Responses are truncated to this many tokens (counted); "
                              "<= max(response_buckets)", rule=">= 1"),
    batch_size=Field(2, "Pairs per batch on each host; the global batch is batch_size * process_count",
                     rule=">= 1"),
    shuffle_seed=Field(0, "Seed of the training shuffle (a new permutation each epoch); eval/check never "
                       "shuffle"),
    num_epochs=Field(1, "Epochs the training iterator runs; the remainder of the last window is dropped",
                     rule=">= 1"),
    num_workers=Field(0, "Grain worker processes (0 = decode in the main process; each worker starts "
                      "in ~3 s)", rule=">= 0"),
    on_bad_record=Field("skip", '"skip": bad records counted and listed in WORKDIR/skipped_records.jsonl; '
                        '"error": the first one stops the run, naming it and the fix',
                        choices=("skip", "error")),
    max_skipped_fraction=Field(0.1, "Stop with an error (exit 4) once skipped records exceed this share of the "
                               "records read (after data.skip_check_min_records); 1.0 = never stop",
                               rule="in [0, 1]"),
    skip_check_min_records=Field(20, "Records read before data.max_skipped_fraction is checked (a shorter run: "
                                 "all it reads); a first batch with no usable record stops at once",
                                 rule=">= 1"),
    tokenizer=Field("", 'Tokenizer folder (tokenizer.json); "" = the model\'s own: model.init_from\'s '
                    "tokenizer.json when it has one, else the preset's default tokenizer"),
    chat_template=Field("training", "training: the template the model family was trained with (ids built "
                        "by the family); checkpoint: rendered from the checkpoint's own chat template "
                        "(tokenizer_config.json / chat_template.jinja) when it has one",
                        choices=("training", "checkpoint")),
    # Read by the trainer only:
    triplets=Field("", 'SFT only (loss.name="sft"): triplets JSONL {id, video, prompt, answer}, used '
                   "instead of data.pairs; trains on the GT answers"),
    synthetic=Field(0, "With no data file set: this many synthetic shape videos (+ 8 held out) generated "
                    "into WORKDIR/synthetic on the first run (0 = a data file is required)", rule=">= 0"),
)


def data_config() -> ml_collections.ConfigDict:
    """The data pipeline's keys with their defaults (DATA): 4 frames, the model's own tokenizer.
    configs/tiny.py uses this block as is, and the dataset checker runs with it when given no
    config file."""
    return DATA.to_config_dict()


def check_data_config(data) -> None:
    """Raises ValueError naming the data.* key(s) of the first unknown key, invalid value or
    invalid combination."""
    DATA.validate(data, "data.")
    check_data_combinations(data)


def check_data_combinations(data) -> None:
    """The rules across data keys (each key's own range is DATA's)."""
    buckets = tuple(data.response_buckets)
    if int(data.max_response_tokens) > buckets[-1]:
        raise ValueError(f"config data.max_response_tokens={data.max_response_tokens!r}: must be <= "
                         f"the largest of data.response_buckets={buckets}")
