"""config_schema: types, rules, generated defaults, unknown keys naming the nearest known one,
one source per default, and the CLIs' refusal of a misspelt override."""

import inspect
import re

import ml_collections
import pytest

from leanpo_jax import config_schema as cs
from leanpo_jax import losses
from leanpo_jax.data.augment import AUGMENT
from leanpo_jax.data.config import DATA, check_data_config, data_config
from leanpo_jax.generate.config import GENERATE, generate_config
from leanpo_jax.train import config as config_lib
from leanpo_jax.train import mesh as mesh_lib, state, step

from conftest import run_cli


def test_types_follow_the_default():
    assert cs.Field(3, "d").parse(4, "k") == 4
    for bad in (True, 1.5, "1"):  # a bool is not an int
        with pytest.raises(ValueError, match=r"^config k="):
            cs.Field(3, "d").parse(bad, "k")
    assert cs.Field(0.5, "d").parse(2, "k") == 2.0 and type(cs.Field(0.5, "d").parse(2, "k")) is float
    for bad in (float("nan"), float("inf"), False, "x"):
        with pytest.raises(ValueError):
            cs.Field(0.5, "d").parse(bad, "k")
    assert cs.Field("", "d").parse("x", "k") == "x"
    assert cs.Field(False, "d").parse(True, "k") is True
    with pytest.raises(ValueError):
        cs.Field(False, "d").parse(1, "k")
    assert cs.Field((1, 2), "d").parse([3, 4, 5], "k") == (3, 4, 5)  # lists read as tuples
    with pytest.raises(ValueError, match="a tuple of ints"):
        cs.Field((1, 2), "d").parse((1, 2.5), "k")
    assert cs.Field((0.5, 1), "d").parse((1, 2), "k") == (1.0, 2.0)
    assert cs.Field(("a",), "d").parse((), "k") == ()
    with pytest.raises(ValueError, match=r"expected one of \('a', 'b'\)"):
        cs.Field("a", "d", choices=("a", "b")).parse("c", "k")
    with pytest.raises(TypeError):
        cs.Field((), "d")  # an empty tuple says nothing of its element type
    with pytest.raises(ValueError, match="one-line doc"):
        cs.Field(1, "two\nlines")


@pytest.mark.parametrize("rule, good, bad", [
    ("> 0", [1e-9, 3], [0, -1]),
    (">= 1 or -1", [1, 7, -1], [0, -2]),
    ("in [0, 1)", [0, 0.99], [1, -0.1]),
    ("in (0, 1] or -1", [1, 0.5, -1], [0, 1.5]),
    ("<= 4", [4, -9], [5]),
])
def test_rules(rule, good, bad):
    field = cs.Field(1.0, "d", rule=rule)
    for value in good:
        field.parse(value, "k")
    for value in bad:
        with pytest.raises(ValueError, match="^" + re.escape(f"config k={value!r}: expected a number {rule}") + "$"):
            field.parse(value, "k")


def test_messages_name_the_dotted_key_the_value_and_the_rule():
    config = config_lib.training_config()
    config.loss.beta = -1
    with pytest.raises(ValueError) as err:
        config_lib.validate(config, num_devices=1)
    assert str(err.value) == "config loss.beta=-1.0: expected a number > 0"  # ConfigDict made it a float
    with pytest.raises(ValueError, match=r"^augment\.crop_scale=\(0\.5, 0\.2\): expected 0 < lo <= hi <= 1$"):
        AUGMENT.validate({**AUGMENT.defaults(), "crop_scale": (0.5, 0.2)}, "augment.", intro="")
    with pytest.raises(ValueError, match=r"^config data\.num_frames is missing: expected an int >= 1$"):
        DATA.validate({k: v for k, v in DATA.defaults().items() if k != "num_frames"}, "data.")


def test_unknown_keys_name_the_nearest_known_key():
    config = config_lib.training_config()
    config.loss.bta = 2.0
    assert cs.unknown_keys(config, config_lib.SCHEMA) == ["loss.bta"]
    with pytest.raises(ValueError, match=r"^unknown config key loss\.bta \(did you mean loss\.beta\?\)$"):
        config_lib.validate(config, num_devices=1)
    config = config_lib.training_config()
    config.data.model_preset = "tiny"  # removed: the model decides
    with pytest.raises(ValueError, match=r"data\.model_preset \(did you mean model\.preset\?\)"):
        cs.check_known(config, config_lib.SCHEMA)
    config = config_lib.training_config()
    config.loss.qqqqqq = 1
    with pytest.raises(ValueError, match=r"loss\.qqqqqq \(known keys under loss: beta, dpo_kind, "):
        config_lib.validate(config, num_devices=1)
    g = generate_config()
    g.winner.temprature = 1.0
    with pytest.raises(ValueError, match=r"generate\.winner\.temprature \(did you mean generate\.winner\.temperature\?\)"):
        GENERATE.validate(g, "generate.")


def test_to_config_dict_is_the_defaults_with_optional_blocks_left_out():
    block = cs.Block(a=cs.Field(1, "d"), sub=cs.Block(b=cs.Field((1.0, 2.0), "d")),
                     extra=cs.Block(optional=True, c=cs.Field("x", "d")))
    config = block.to_config_dict()
    assert isinstance(config, ml_collections.ConfigDict)
    assert config.to_dict() == {"a": 1, "sub": {"b": (1.0, 2.0)}}
    assert block.paths() == ["a", "sub.b", "extra.c"]
    assert block.validate(config) == {"a": 1, "sub": {"b": (1.0, 2.0)}}
    config.extra = {"c": "y"}
    assert block.validate(config)["extra"] == {"c": "y"}


def test_every_config_key_is_declared_once_with_a_one_line_doc():
    config = config_lib.training_config()
    config.generate = generate_config()

    def leaves(node, prefix=""):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, ml_collections.ConfigDict) else [prefix + key]

    assert sorted(leaves(config)) == sorted(config_lib.SCHEMA.paths())
    config_lib.validate(config, num_devices=1)


def test_loss_and_optimizer_defaults_have_one_source():
    leanpo = inspect.signature(losses.leanpo_loss).parameters
    loss = config_lib.training_config().loss
    for key in ("beta", "gamma", "label_smoothing", "smoothing_threshold", "smoothing_form"):
        assert loss[key] == leanpo[key].default, key
    assert loss.sft_weight == inspect.signature(losses.leanpo_objective).parameters["sft_weight"].default
    assert loss.dpo_kind == inspect.signature(losses.dpo_loss).parameters["kind"].default
    assert step._loss_cfg({}) == step.LOSS.defaults() == loss.to_dict()
    assert step._loss_cfg({"loss": {"beta": 0.3}})["beta"] == 0.3
    optimizer = config_lib.training_config().optimizer.to_dict()
    assert {k: state.OPTIMIZER_DEFAULTS[k] for k in optimizer} == optimizer == state.OPTIMIZER.defaults()
    assert not hasattr(step, "LOSS_DEFAULTS")


def test_mesh_and_distributed_blocks_equal_the_mesh_defaults():
    assert cs.MESH.defaults() == mesh_lib.mesh_config().to_dict()
    assert cs.DISTRIBUTED.defaults() == mesh_lib.distributed_config().to_dict()


def test_the_model_decides_the_data_block_names_no_preset():
    data = data_config()
    assert "model_preset" not in data and "model_preset" not in config_lib.training_config("demo").data
    assert data.chat_template == "training"
    data.chat_template = "hub"
    with pytest.raises(ValueError, match=r"^config data\.chat_template='hub': expected one of \('training', 'checkpoint'\)$"):
        check_data_config(data)
    data = data_config()
    data.max_response_tokens = 65
    with pytest.raises(ValueError, match=r"data\.max_response_tokens=65: must be <= the largest of data\.response_buckets"):
        check_data_config(data)


@pytest.mark.parametrize("module, prog, extra", [
    ("leanpo_jax.train", "leanpo-train", ["--workdir", "unused"]),
    ("leanpo_jax.generate", "leanpo-generate", ["--input", "in.jsonl", "--output", "out.jsonl"]),
])
def test_the_clis_refuse_a_misspelt_override_naming_the_nearest_key(module, prog, extra):
    proc = run_cli(["-m", module, "--config", "configs/tiny.py", *extra, "--config.loss.bta=2"],
                   env={"JAX_PLATFORMS": "cpu"}, check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        f"{prog}: error: unknown config key loss.bta (did you mean loss.beta?)"
    assert "Traceback" not in proc.stderr
