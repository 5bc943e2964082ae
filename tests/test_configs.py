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


import pytest  # noqa: E402

from leanpo_jax.models import get_preset  # noqa: E402
from leanpo_jax.train import config as config_lib  # noqa: E402


@pytest.mark.parametrize("name", ["llava_ov_0p5b", "llava_video_7b", "llava_next_video_7b"])
def test_gpu_configs_carry_the_paper_recipe_and_validate(name):
    config = load_config(name)
    assert (config.loss.beta, config.loss.gamma, config.loss.label_smoothing, config.loss.sft_weight) == (2.0, 0.5, 0.1, 0.5)
    opt = config.optimizer
    assert (opt.learning_rate, opt.schedule, opt.warmup_ratio, opt.weight_decay) == (5e-7, "linear", 0.1, 0.0)
    assert config.data.num_frames == 16
    assert tuple(config.model.frozen_modules) == ("vision_tower", "connector")
    assert "model_preset" not in config.data  # the model (model.preset or model.init_from) decides
    get_preset(config.model.preset)
    config_lib.validate(config, num_devices=8)


def test_every_block_key_is_documented_by_a_comment():
    """Each key assigned in train/config.py's blocks has a comment line right above it."""
    source = open(os.path.join(REPO_ROOT, "leanpo_jax", "train", "config.py"), encoding="utf-8").read()
    lines = source.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped[:2] in ("m.", "o.", "t.", "e.", "p.", "g.", "c.") and " = " in stripped:
            above = lines[i - 1].strip()
            assert above.startswith("#") or lines[i - 1].strip()[:2] == stripped[:2], line


@pytest.mark.parametrize("override, key", [
    ({"loss.name": "orpo"}, "loss.name"),
    ({"data.triplets": "t.jsonl"}, "data.triplets"),            # triplets need loss.name=sft
    ({"mesh.data": 3}, "mesh.data"),                             # 3 does not divide 8 devices
    ({"data.batch_size": 3}, "data.batch_size"),                 # 3 pairs over data*fsdp = 8
    ({"train.layout": "packed"}, "train.layout"),
    ({"num_steps": 30}, "num_steps"),                            # beyond total_steps = 20
    ({"optimizer.warmup_ratio": 1.0}, "optimizer.warmup_ratio"),
    ({"train.grad_accum_steps": 0}, "train.grad_accum_steps"),
])
def test_invalid_settings_are_rejected_naming_the_key(override, key):
    config = load_config("tiny")
    for dotted, value in override.items():
        node = config
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        config_lib.validate(config, num_devices=8)
