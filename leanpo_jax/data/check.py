"""Dataset checker: read every record through the training code path and report what is bad.

    python -m leanpo_jax.data.check --pairs FILE [--video-root DIR] [--config CONFIG]
                                    [--skipped-out FILE] [--kind pairs|triplets] [--strict]
    leanpo-check-data ...                       (the same, as a console script)

Every record goes through `pipeline.DataPipeline` (eval order: no shuffle, no record dropped;
decoding, tokenising and batching exactly as in training) with on_bad_record="skip". The
output is a human summary whose LAST stdout line is JSON:

    {"records": N, "ok": n, "skipped": {"reason": count, ...}}

where N counts the non-blank lines of the file (a malformed line counts) and
ok + sum(skipped) == N. The config's model (`model.preset`, or the checkpoint at
`model.init_from`) decides frame size, video-token count, template and tokenizer, exactly as
in training. Without --config the built-in defaults (the tiny preset, 4 frames, its default
Qwen tokenizer: leanpo_jax.data.config, configs/tiny.py's data block) are used, from any
directory; `--init-from DIR` checks against a checkpoint instead.
Exit status: 0 when the data is usable; 1 when no record is usable, or the skipped share
exceeds data.max_skipped_fraction (the trainer's rule, `data.skip_budget`; override it with
--max-skipped-fraction), or with --strict any record was skipped; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from typing import Optional, Sequence

from leanpo_jax.console import quiet_missing_torch_advice

quiet_missing_torch_advice()  # before anything imports transformers

import jax
import ml_collections

from leanpo_jax.data import pipeline
from leanpo_jax.data.config import data_config as default_data_config
from leanpo_jax.data.contract import ModelInterface
from leanpo_jax.data.skip_budget import SkipBudget
from leanpo_jax.models.runtime import data_interface, model_source

DEFAULT_PRESET = "tiny"


def load_config(path: str) -> ml_collections.ConfigDict:
    """An ml_collections config file (a module with get_config()) with a `data` block."""
    spec = importlib.util.spec_from_file_location("leanpo_check_config", path)
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if "data" not in config:
        raise ValueError(f"config {path} has no `data` block (see configs/tiny.py data_config())")
    return config


def model_interface(config: Optional[ml_collections.ConfigDict], data: ml_collections.ConfigDict,
                    init_from: str = "") -> ModelInterface:
    """The data interface of the config's model block (default: the tiny preset), or of the
    checkpoint `init_from` when given."""
    block = ml_collections.ConfigDict({"preset": DEFAULT_PRESET, "init_from": "", "dtype": "auto",
                                       "attention_impl": "auto", "remat": False, "vocab_size": 0})
    if config is not None and "model" in config:
        block.update(config.model.to_dict())
    if init_from:
        block.init_from = init_from
    return data_interface(model_source(block, jax.devices()[0].platform), data)


def check(data: ml_collections.ConfigDict, model: ModelInterface, *, skipped_out: Optional[str] = None,
          log=print) -> dict:
    """Reads every record of data.pairs as `model` (its data interface) sees them; returns
    {"records", "ok", "skipped"} (plus details under "stats"). `skipped_out` receives one JSON
    line per skipped record (overwritten)."""
    data = ml_collections.ConfigDict(data.to_dict())
    data.on_bad_record = "skip"
    if skipped_out and os.path.exists(skipped_out):
        os.remove(skipped_out)  # the pipeline appends
    start = time.perf_counter()
    with pipeline.DataPipeline(data, model=model, train=False, process_index=0, process_count=1,
                               skipped_path=skipped_out or None) as pipe:
        spec = pipe.spec
        log(f"checking {os.path.abspath(data.pairs)} ({data.kind}, {len(pipe.source)} records; "
            f"videos under {pipeline.resolve_video_root(data)})")
        size = "no video" if spec.frames is None else " | ".join("{}x{}".format(*b.frames.size) for b in spec.buckets)
        log(f"  model {model.source} ({model.family}): {spec.num_frames} frames of {size}, prompt length "
            f"P={spec.prompt_len} ({spec.num_video_tokens} video + {spec.max_prompt_text_tokens} text "
            f"tokens), response buckets {spec.response_buckets}; tokenizer {pipe.tokenizer.where}")
        response_key = "chosen_ids" if data.kind == "pairs" else "answer_ids"
        buckets = {}
        for batch in pipe:
            r = batch[response_key].shape[1]
            buckets[r] = buckets.get(r, 0) + 1
        stats = pipe.stats()
        first = list(pipe.first_skipped)
    seconds = time.perf_counter() - start
    skipped = dict(sorted(stats["skipped"].items()))
    log(f"records: {stats['records']}  ok: {stats['ok']}  skipped: {sum(skipped.values())}  "
        f"({seconds:.1f} s)")
    for reason, count in skipped.items():
        log(f"  {reason}: {count}")
    if stats["truncated_responses"]:
        log(f"responses truncated to max_response_tokens={spec.max_response_tokens}: "
            f"{stats['truncated_responses']}")
    log(f"batches per response bucket R: {dict(sorted(buckets.items()))}")
    if first:
        log("first skipped records:")
        for bad in first[:10]:
            log(f"  {bad.message()}")
    if skipped_out and skipped:
        log(f"all skipped records: {skipped_out}")
    result = {"records": stats["records"], "ok": stats["ok"], "skipped": skipped}
    if result["ok"] + sum(skipped.values()) != result["records"]:  # never report a lost record as fine
        raise RuntimeError(f"checker accounting mismatch (a pipeline bug): {stats}")
    return {**result, "stats": stats}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leanpo-check-data", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", required=True, help="JSONL file of records (pairs or triplets)")
    p.add_argument("--video-root", default="", help="folder the `video` paths are relative to "
                   "(default: the JSONL file's folder)")
    p.add_argument("--config", default="", help="config file with `data` (and `model`) blocks "
                   "(default: built-in tiny)")
    p.add_argument("--init-from", default="", help="check against this HF checkpoint folder (its "
                   "frames, template and tokenizer) instead of the config's model")
    p.add_argument("--skipped-out", default="", help="write one JSON line per skipped record here")
    p.add_argument("--kind", choices=("pairs", "triplets"), default=None, help="override data.kind")
    p.add_argument("--num-workers", type=int, default=None, help="override data.num_workers")
    p.add_argument("--max-skipped-fraction", type=float, default=None,
                   help="override data.max_skipped_fraction: exit 1 above this skipped share")
    p.add_argument("--strict", action="store_true", help="exit 1 if any record was skipped")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console-script entry point (`leanpo-check-data`)."""
    args = _parser().parse_args(argv)
    from absl import flags  # pylint: disable=import-outside-toplevel
    if not flags.FLAGS.is_parsed():  # grain workers read absl flags
        flags.FLAGS.mark_as_parsed()
    try:
        config = load_config(args.config) if args.config else None
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = config.data if config is not None else default_data_config()
    if not os.path.isfile(args.pairs):
        print(f"error: --pairs {args.pairs!r} is not a file", file=sys.stderr)
        return 2
    data.pairs = os.path.abspath(args.pairs)
    data.video_root = os.path.abspath(args.video_root) if args.video_root else ""
    if args.kind:
        data.kind = args.kind
    if args.num_workers is not None:
        data.num_workers = args.num_workers
    if args.max_skipped_fraction is not None:
        if not 0.0 <= args.max_skipped_fraction <= 1.0:
            print("error: --max-skipped-fraction must be in [0, 1]", file=sys.stderr)
            return 2
        data.max_skipped_fraction = args.max_skipped_fraction
    try:
        model = model_interface(config, data, args.init_from)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = check(data, model, skipped_out=args.skipped_out)
    sys.stdout.flush()
    verdict = SkipBudget.from_config(data, result["records"]).verdict(
        result["records"], sum(result["skipped"].values()), result["skipped"], args.skipped_out or None)
    if verdict:
        print(f"leanpo-check-data: {verdict}", file=sys.stderr, flush=True)
    print(json.dumps({k: result[k] for k in ("records", "ok", "skipped")}), flush=True)
    return 1 if verdict or (args.strict and result["skipped"]) else 0


if __name__ == "__main__":
    sys.exit(main())
