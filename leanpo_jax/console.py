"""What every command-line entry point sets up before the libraries it uses are imported."""

import importlib.util
import os


def quiet_missing_torch_advice() -> None:
    """transformers warns "PyTorch was not found" on import when torch is absent; leanpo_jax uses
    only its tokenizers and configs, so the warning is noise in the JAX-only (demo) venv. Sets
    TRANSFORMERS_NO_ADVISORY_WARNINGS (an advisory-only switch) unless torch is installed or the
    user chose a value."""
    if importlib.util.find_spec("torch") is None:
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def begin_absl_main(argv, hint: str = "") -> None:
    """The first lines of every absl `main(argv)`: stray positional arguments are a usage error
    (`hint` appended), and absl logs warnings only unless --verbosity was given (Orbax logs
    every checkpoint phase at INFO)."""
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}{'; ' + hint if hint else ''}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
