#!/usr/bin/env bash
# Sets up ./.venv on a fresh machine (leanpo_jax with its test extra) and runs the whole test
# suite. Arguments replace the default `tests` target, e.g.
# `bash launch/test.sh tests/test_losses.py -x`.
# Exits non-zero when a test fails and when no test ran (pytest's exit code 5).
# Test files run in LEANPO_TEST_WORKERS parallel pytest processes (default 2; 0 = one process):
# XLA compiles, which dominate the CPU suite, use one core each. A file stays on one worker so
# its module-scoped fixtures (shared compiled functions) are built once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source launch/_venv.sh
ensure_venv test
if [ "$#" -eq 0 ]; then set -- tests; fi
workers="${LEANPO_TEST_WORKERS:-2}"
if [ "$workers" != "0" ]; then set -- -n "$workers" --dist loadfile "$@"; fi
exec "$VENV_PYTHON" -m pytest --durations=20 "$@"
