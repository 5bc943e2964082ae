#!/usr/bin/env bash
# Sets up ./.venv on a fresh machine (leanpo_jax with its test extra) and runs the whole test
# suite. Arguments replace the default `tests` target, e.g.
# `bash launch/test.sh tests/test_losses.py -x`.
# Exits non-zero when a test fails and when no test ran (pytest's exit code 5).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source launch/_venv.sh
ensure_venv test
if [ "$#" -eq 0 ]; then set -- tests; fi
exec "$VENV_PYTHON" -m pytest --durations=20 "$@"
