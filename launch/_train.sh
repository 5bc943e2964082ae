# Sourced by launch/gpu_train.sh and launch/tpu_pod_train.sh:
#   run_training SCRIPT VENV_KIND [EXTRA_TRAIN_ARGS ...] -- CONFIG WORKDIR [--config.key=value ...]
# checks the arguments, sets up ./.venv with the VENV_KIND extra (LEANPO_NO_SETUP=1: use
# $PYTHON or python3 as is) and execs `python -m leanpo_jax.train`.
run_training() {
    local script="$1" kind="$2"; shift 2
    local extra=()
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do extra+=("$1"); shift; done
    shift  # the "--"
    if [ "$#" -lt 2 ]; then
        echo "usage: bash launch/$script CONFIG WORKDIR [--config.key=value ...]" >&2
        exit 2
    fi
    local config="$1" workdir="$2"; shift 2
    cd "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [ "${LEANPO_NO_SETUP:-0}" = "1" ]; then
        VENV_PYTHON="${PYTHON:-python3}"
    else
        source launch/_venv.sh
        ensure_venv "$kind"
    fi
    exec "$VENV_PYTHON" -m leanpo_jax.train --config "$config" --workdir "$workdir" "${extra[@]}" "$@"
}
