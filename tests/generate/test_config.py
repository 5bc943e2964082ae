"""The generate block: family decoding defaults and config errors naming the key."""

import pytest

from leanpo_jax.generate import config as gen_config


def test_family_defaults_fill_unset_decoding():
    g = gen_config.generate_config()
    assert gen_config.resolved_decoding(g, "winner", "llava-ov-qwen2-0.5b") == {"temperature": 0.0, "top_p": 1.0, "top_k": 0}
    assert gen_config.resolved_decoding(g, "winner", "llava-next-video-7b")["top_p"] == 0.9
    assert gen_config.resolved_decoding(g, "loser", "llava-next-video-7b") == {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
    g.winner.temperature = 0.7
    assert gen_config.resolved_decoding(g, "winner", "llava-next-video-7b")["temperature"] == 0.7
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
