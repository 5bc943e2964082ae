"""The model decides: a checkpoint folder gives the family, frames, template and tokenizer; a
tokenizer that disagrees with its config stops at start naming both files; preprocessor configs
are read and written; runtime settings (remat, dtype) reach every module of a loaded model."""

import json
import os
import shutil

import numpy as np
import pytest

from leanpo_jax.data import tokenize
from leanpo_jax.data.tokenize import ChatTokenizer
from leanpo_jax.models import resolve_model
from leanpo_jax.models.llava_onevision import preprocessor

from tiny_checkpoint import MEAN, STD, VIDEO_ID, make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "tiny"))


def test_the_checkpoint_decides_family_frames_template_and_tokenizer(checkpoint):
    source = resolve_model(preset="llava-ov-qwen2-0.5b", init_from=checkpoint)  # the preset is ignored
    assert source.family.name == "llava_onevision" and source.folder == os.path.abspath(checkpoint)
    model = source.interface()
    assert model.source == os.path.abspath(checkpoint) and model.tokenizer == os.path.abspath(checkpoint)
    assert model.frames.size == (24, 24) and model.frames.resize == "direct"
    assert model.frames.mean == MEAN and model.frames.std == STD  # from the preprocessor config
    assert model.video_token_index == VIDEO_ID and model.video_token == "<video>"
    assert model.video_tokens(4) == 17 and model.vocab_size == 151936
    chat = ChatTokenizer.for_model(model)
    ids = chat.prompt_ids("What moves?", 17)
    assert int(np.sum(ids == VIDEO_ID)) == 17 and chat.where == os.path.join(model.tokenizer, "tokenizer.json")


def test_a_tokenizer_without_the_configs_placeholder_stops_naming_both_files(checkpoint, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(checkpoint, broken)
    # The plain Qwen tokenizer: id 151670 does not exist there (151647 would be <|object_ref_end|>).
    shutil.copyfile(tokenize.tokenizer_file(""), os.path.join(broken, "tokenizer.json"))
    model = resolve_model(init_from=broken).interface()
    with pytest.raises(ValueError) as err:
        ChatTokenizer.for_model(model)
    message = str(err.value)
    assert os.path.join(broken, "tokenizer.json") in message and os.path.join(broken, "config.json") in message
    assert "'<video>'" in message and "data.tokenizer" in message
    # data.tokenizer pointing at a tokenizer without the placeholder is caught the same way.
    with pytest.raises(ValueError, match="disagree"):
        ChatTokenizer.for_model(resolve_model(init_from=checkpoint).interface(), tokenize.default_tokenizer_dir())


def test_preprocessor_configs_are_written_read_and_checked(checkpoint, tmp_path):
    transformers = pytest.importorskip("transformers")
    for name in (preprocessor.VIDEO_FILE, preprocessor.IMAGE_FILE):
        assert os.path.isfile(os.path.join(checkpoint, name)), name
    processor = transformers.LlavaOnevisionImageProcessorPil.from_pretrained(checkpoint)
    assert tuple(processor.image_mean) == MEAN and tuple(processor.image_std) == STD
    assert (processor.size["height"], processor.size["width"]) == (24, 24)
    bad = str(tmp_path / "bad")
    shutil.copytree(checkpoint, bad)
    path = os.path.join(bad, preprocessor.VIDEO_FILE)
    with open(path) as f:
        d = json.load(f)
    d["size"] = {"height": 32, "width": 32}
    with open(path, "w") as f:
        json.dump(d, f)
    with pytest.raises(ValueError) as err:
        resolve_model(init_from=bad)
    assert path in str(err.value) and os.path.join(bad, "config.json") in str(err.value)


def test_runtime_settings_reach_every_module_of_a_loaded_checkpoint(checkpoint):
    source = resolve_model(init_from=checkpoint).replace_config(remat=True, dtype="bfloat16")
    model = source.load()
    assert model.language_model.remat and model.config.remat
    assert str(model.language_model.dtype) == "bfloat16"
    assert str(model.language_model.embed_tokens[...].dtype) == "float32"  # stored dtype kept
