"""Command-line entry points: --help of a console script lists its flags; the torch advisory."""

import os
import subprocess
import sys

from conftest import REPO_ROOT

from leanpo_jax import console


def test_console_script_help_lists_its_flags():
    script = os.path.join(os.path.dirname(sys.executable), "leanpo-train")
    assert os.path.exists(script), "leanpo_jax is not installed in this venv (pip install -e .)"
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, env=env, timeout=120)
    # (absl's --help exits 1, by its design)
    assert "--workdir: Run folder" in proc.stdout and "--config: Training config file" in proc.stdout
    assert "--config.BLOCK.KEY=VALUE" in proc.stdout and "4 too many" in proc.stdout


def test_torch_advisory_is_silenced_only_without_torch(monkeypatch):
    monkeypatch.delenv("TRANSFORMERS_NO_ADVISORY_WARNINGS", raising=False)
    monkeypatch.setattr(console.importlib.util, "find_spec", lambda name: object())
    console.quiet_missing_torch_advice()
    assert "TRANSFORMERS_NO_ADVISORY_WARNINGS" not in os.environ
    monkeypatch.setattr(console.importlib.util, "find_spec", lambda name: None)
    console.quiet_missing_torch_advice()
    assert os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] == "1"
    monkeypatch.setenv("TRANSFORMERS_NO_ADVISORY_WARNINGS", "0")  # a user's choice stays
    console.quiet_missing_torch_advice()
    assert os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] == "0"
