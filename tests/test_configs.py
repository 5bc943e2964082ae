"""The embedded configuration files load and agree with the library's defaults."""

import importlib.util
import inspect
import os

from leanpo_jax import losses

from conftest import REPO_ROOT


def load_config(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_tiny_loss_block_has_the_paper_defaults_of_leanpo_loss():
    loss = load_config("tiny").loss
    assert loss.name == "leanpo"
    defaults = inspect.signature(losses.leanpo_loss).parameters
    for key in ("beta", "gamma", "label_smoothing", "smoothing_threshold", "smoothing_form"):
        assert loss[key] == defaults[key].default, key
    assert loss.sft_weight == inspect.signature(losses.leanpo_objective).parameters["sft_weight"].default
    assert (loss.beta, loss.gamma, loss.label_smoothing, loss.sft_weight) == (2.0, 0.5, 0.1, 0.5)
