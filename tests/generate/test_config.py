"""The generate block: family decoding defaults and config errors naming the key."""

import pytest

from leanpo_jax.generate import config as gen_config
from leanpo_jax.models import get_preset
from leanpo_jax.models.family import NUCLEUS
from leanpo_jax.models.registry import preset_family


def test_family_defaults_fill_unset_decoding():
    g = gen_config.generate_config()
    ov = preset_family("llava-ov-qwen2-0.5b").decoding_defaults(get_preset("llava-ov-qwen2-0.5b"))
    assert gen_config.resolved_decoding(g, "winner", ov) == {"temperature": 0.0, "top_p": 1.0, "top_k": 0}
    # Vicuna-era families (LLaVA-NeXT-Video) sample.
    assert gen_config.resolved_decoding(g, "winner", NUCLEUS)["top_p"] == 0.9
    assert gen_config.resolved_decoding(g, "loser", NUCLEUS) == {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
    g.winner.temperature = 0.7
    assert gen_config.resolved_decoding(g, "winner", NUCLEUS)["temperature"] == 0.7
    gen_config.check_generate_config(g)


@pytest.mark.parametrize("key, value, path", [
    ("prior_template", "Hints: {hint}", "generate.prior_template"),
    ("reflection_template", "{first_turn} {answer", "generate.reflection_template"),
    ("max_new_tokens", 0, "generate.max_new_tokens"),
])
def test_bad_values_name_the_key(key, value, path):
    g = gen_config.generate_config()
    g[key] = value
    with pytest.raises(ValueError, match=path.replace(".", r"\.")):
        gen_config.check_generate_config(g)


def test_bad_top_p_names_the_side():
    g = gen_config.generate_config()
    g.loser.top_p = 1.5
    with pytest.raises(ValueError, match=r"generate\.loser\.top_p"):
        gen_config.check_generate_config(g)
