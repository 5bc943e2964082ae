#!/usr/bin/env bash
# The main job on the embedded default: `bash launch/demo.sh [WORKDIR]` (default ./demo_out).
# Sets up ./.venv with leanpo_jax alone (no torch), then runs the end-to-end demo: synthetic
# corpus -> SFT -> self-generated pairs -> DPO / SimPO / LeanPO -> held-out evaluation -> report.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
workdir="${1:-$root/demo_out}"
source launch/_venv.sh
ensure_venv demo
exec "$VENV_PYTHON" -m leanpo_jax.demo --workdir "$workdir"
