#!/usr/bin/env bash
# The main job on the embedded default: `bash launch/demo.sh [WORKDIR]` (default ./demo_out).
# Sets up ./.venv with leanpo_jax alone (no torch), then runs the job.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
workdir="${1:-$root/demo_out}"
source launch/_venv.sh
ensure_venv demo
if "$VENV_PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("leanpo_jax.demo") is None)'; then
    exec "$VENV_PYTHON" -m leanpo_jax.demo --workdir "$workdir"
fi
# Until the end-to-end demo (SFT -> self-generated pairs -> DPO/SimPO/LeanPO) exists, the job is
# a LeanPO run of the tiny config on a synthetic corpus generated into the workdir (CPU, ~1-2 min).
# Rerunning on the same workdir resumes from its checkpoint (and does nothing once finished).
exec "$VENV_PYTHON" -m leanpo_jax.train --config configs/tiny.py --workdir "$workdir"
