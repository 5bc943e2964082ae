#!/usr/bin/env bash
# Training on a TPU pod slice: the SAME command runs on every worker, e.g.
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command \
#     "cd leanpo_jax && bash launch/tpu_pod_train.sh configs/llava_video_7b.py /mnt/runs/lv7b \
#        --config.model.init_from=/mnt/models/LLaVA-Video-7B-Qwen2 --config.data.pairs=/mnt/data/pairs.jsonl"
# jax.distributed.initialize() discovers the workers on TPU VMs (distributed.auto=True); each
# worker reads its shard of the data; Orbax writes the checkpoint from every worker, so WORKDIR
# must be a shared POSIX folder (NFS, Filestore or a gcsfuse mount) seen identically by all
# workers (metrics and exports are written with plain file I/O).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_train.sh"
run_training tpu_pod_train.sh tpu --config.distributed.auto=True -- "$@"
