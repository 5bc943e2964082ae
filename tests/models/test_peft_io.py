"""LoRA adapters against PEFT on a tiny random Qwen2.5-VL saved by transformers (fp32, CPU):
our export loads with `PeftModel.from_pretrained` and gives our logits, a PEFT-made adapter
(random non-zero B) loads here and gives PEFT's, and the merged model (W + scale·A·B) equals
the adapted one and reloads in transformers."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from leanpo_jax.models import get_preset, resolve_model, save_hf
from leanpo_jax.models import lora as lora_lib
from leanpo_jax.models import peft_io
from leanpo_jax.models.qwen_vl.hf_config import transformers_dict
from leanpo_jax.models.runtime import model_source

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

PRESET, CLASS = "qwen2.5-vl-tiny", "Qwen2_5_VLForConditionalGeneration"
IDS = np.random.default_rng(0).integers(10, 150000, size=(2, 9))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    cls = getattr(transformers, CLASS)
    hf = cls(cls.config_class.from_dict(transformers_dict(get_preset(PRESET))))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen) + (1.0 if "norm" in name or "ln_q" in name else 0.0))
    out = str(tmp_path_factory.mktemp("q25"))
    hf.eval().save_pretrained(out)
    return out


def hf_model(folder):
    return getattr(transformers, CLASS).from_pretrained(folder).eval()


def torch_logits(model):
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(IDS)).logits.numpy()


def our_logits(model):
    return np.asarray(model(jnp.asarray(IDS)) @ model.lm_head_kernel())


def adapted(folder, cfg, seed=0):
    return resolve_model(init_from=folder).replace_config(lora=cfg).load(seed=seed)


def random_b(model, seed=1):
    for i, (path, var) in enumerate(sorted(nnx.to_flat_state(nnx.state(model, lora_lib.LoRAParam)))):
        if path[-1].endswith("_lora_b"):  # fresh adapters have B = 0
            var.set_value(0.2 * jax.random.normal(jax.random.key(seed + i), var.shape))
    return model


def test_our_adapter_loads_in_peft_with_our_logits(folder, tmp_path):
    cfg = lora_lib.LoRAConfig(rank=4, alpha=8.0, target_modules=r".*layers\.1\..*|.*layers\.0\.mlp\.down_proj")
    model = random_b(adapted(folder, cfg))
    out = peft_io.save_peft_adapter(model, str(tmp_path / "adapter"), base_model_name_or_path=folder)
    with open(os.path.join(out, "adapter_config.json")) as f:
        config = json.load(f)
    assert (config["peft_type"], config["task_type"], config["r"], config["lora_alpha"]) == ("LORA", "CAUSAL_LM", 4, 8.0)
    reference = peft.PeftModel.from_pretrained(hf_model(folder), out).eval()
    adapted_modules = sorted(n for n, m in reference.named_modules() if hasattr(m, "lora_A") and len(m.lora_A))
    assert len(adapted_modules) == 7 + 1 and all(".language_model." in n for n in adapted_modules)
    want = torch_logits(reference)
    assert np.abs(want - torch_logits(hf_model(folder))).max() > 1e-3  # the adapter matters
    np.testing.assert_allclose(our_logits(model), want, atol=1e-4, rtol=0)


def test_a_peft_made_adapter_loads_here_with_peft_logits(folder, tmp_path):
    made = peft.get_peft_model(hf_model(folder), peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False,
        use_rslora=True))
    made.eval().save_pretrained(str(tmp_path / "made"))
    cfg = peft_io.read_peft_config(str(tmp_path / "made"))
    assert (cfg.rank, cfg.alpha, cfg.use_rslora, cfg.scale) == (4, 16.0, True, 8.0)
    model = adapted(folder, cfg)
    peft_io.load_peft_adapter(model, str(tmp_path / "made"))
    want = torch_logits(made)
    np.testing.assert_allclose(our_logits(model), want, atol=1e-4, rtol=0)
    # The same through the config: model.init_from + model.lora.init_from (its r / alpha / targets).
    block = ml_collections.ConfigDict({"preset": "", "init_from": folder, "dtype": "float32", "attention_impl": "xla",
                                       "remat": False, "vocab_size": 0, "lora": {
                                           "rank": 0, "alpha": 1.0, "dropout": 0.0, "use_rslora": False,
                                           "target_modules": "", "init_from": str(tmp_path / "made")}})
    source = model_source(block, "cpu")
    assert source.config.lora == cfg
    np.testing.assert_allclose(our_logits(source.load()), want, atol=1e-4, rtol=0)
    block.lora.rank = 8
    with pytest.raises(ValueError, match=r"model.lora.rank=8 but the adapter .* has r=4"):
        model_source(block, "cpu")


def test_merged_model_equals_the_adapted_one_and_reloads_in_transformers(folder, tmp_path):
    model = random_b(adapted(folder, lora_lib.LoRAConfig(rank=4, alpha=8.0)))
    before = our_logits(model)
    peft_io.merge_adapters(model)
    assert not jax.tree.leaves(nnx.state(model, lora_lib.LoRAParam))
    np.testing.assert_allclose(our_logits(model), before, atol=1e-5, rtol=0)
    save_hf(model, str(tmp_path / "merged"))
    np.testing.assert_allclose(torch_logits(hf_model(str(tmp_path / "merged"))), before, atol=1e-4, rtol=0)


def test_a_file_for_other_modules_is_refused(folder, tmp_path):
    made = peft.get_peft_model(hf_model(folder), peft.LoraConfig(r=4, target_modules=["q_proj"]))
    made.save_pretrained(str(tmp_path / "q"))
    model = adapted(folder, lora_lib.LoRAConfig(rank=4, target_modules=("q_proj", "v_proj")))
    with pytest.raises(KeyError, match=r"no base_model\.model\.model\.language_model\.layers\.0\.self_attn\.v_proj"):
        peft_io.load_peft_adapter(model, str(tmp_path / "q"))
    with pytest.raises(ValueError, match="adapter_config.json"):
        peft_io.read_peft_config(str(tmp_path))
