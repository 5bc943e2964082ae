#!/usr/bin/env bash
# Training on one GPU host (all its GPUs, one process):
#   bash launch/gpu_train.sh CONFIG WORKDIR [--config.key=value ...]
# e.g. bash launch/gpu_train.sh configs/llava_ov_0p5b.py runs/ov05 \
#        --config.model.init_from=/models/llava-onevision-qwen2-0.5b-ov-hf \
#        --config.data.pairs=/data/pairs.jsonl --config.data.video_root=/data/videos
# Sets up ./.venv with jax[cuda12] (skip with LEANPO_NO_SETUP=1 to use the current python).
# Rerunning the same command resumes from the latest checkpoint in WORKDIR.
set -euo pipefail
# JAX preallocates 75% of GPU memory by default; training wants most of it.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
source "$(dirname "${BASH_SOURCE[0]}")/_train.sh"
run_training gpu_train.sh cuda -- "$@"
