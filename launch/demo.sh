#!/usr/bin/env bash
# The main job on the embedded default: `bash launch/demo.sh [WORKDIR]` (default ./demo_out).
# Sets up ./.venv with leanpo_jax alone (no torch), then runs the job.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
workdir="${1:-$root/demo_out}"
source launch/_venv.sh
ensure_venv demo
# The end-to-end job (synthetic corpus -> SFT -> self-generated pairs -> DPO/SimPO/LeanPO) is
# built by the training and demo issues; until its entry point exists, say so plainly.
if ! "$VENV_PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("leanpo_jax.demo") is None)'; then
    echo "leanpo_jax is installed in $root/.venv, but the main job (leanpo_jax.demo) is not built yet:" >&2
    echo "this checkout has the loss library only (see README.md, 'What exists')." >&2
    exit 3
fi
exec "$VENV_PYTHON" -m leanpo_jax.demo --workdir "$workdir"
