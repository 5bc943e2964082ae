"""LLaVA-NeXT-Video prompts pinned against transformers' tokenisation of the rendered text (one
BOS from the Llama tokenizer's post-processor, <video> expanded to the model's count): the
training template (vicuna_v1 as LLaVA wrote it) and the checkpoint's own hub template."""

import json
import os

import ml_collections
import numpy as np
import pytest

from leanpo_jax.data.tokenize import ChatTokenizer
from leanpo_jax.models import build_model, get_preset, resolve_model, save_hf
from leanpo_jax.models.llava_next_video.template import VICUNA_SYSTEM_PROMPT
from leanpo_jax.models.runtime import data_interface

from llama_tokenizer import write_llama_tokenizer

transformers = pytest.importorskip("transformers")

# The llava-hf LLaVA-NeXT-Video chat template (the conversion script's chat_vicuna, with the video
# loop of the hub version): the system text runs straight into "USER: ", each text gets a " ".
HUB_VICUNA = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'][0]['text'] }}"
    "{% else %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")
QUESTION, N = "What colour is the shape?", 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("nv_chat"))
    save_hf(build_model(get_preset("llava-next-video-tiny"), seed=0), folder)
    write_llama_tokenizer(folder)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f)
    with open(os.path.join(folder, "chat_template.jinja"), "w") as f:
        f.write(HUB_VICUNA)
    return folder


def _chat(folder, mode):
    data = ml_collections.ConfigDict({"chat_template": mode, "tokenizer": ""})
    return ChatTokenizer.for_model(data_interface(resolve_model(init_from=folder), data))


def _hf_ids(folder, text):
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    return tok(text.replace("<video>", "<video>" * N))["input_ids"]  # BOS from the post-processor


def test_training_prompt_is_vicuna_v1_with_one_bos(checkpoint):
    prompt = _chat(checkpoint, "training").prompt_ids(QUESTION, N)
    want = _hf_ids(checkpoint, f"{VICUNA_SYSTEM_PROMPT} USER: <video>\n{QUESTION} ASSISTANT:")
    assert prompt.tolist() == want
    assert prompt[0] == 1 and int(np.sum(prompt == 1)) == 1 and int(np.sum(prompt == 32000)) == N


def test_checkpoint_prompt_is_the_hub_template_rendering(checkpoint):
    chat = _chat(checkpoint, "checkpoint")
    tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
    messages = [{"role": "system", "content": [{"type": "text", "text": VICUNA_SYSTEM_PROMPT}]},
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = chat.prompt_ids(QUESTION, N)
    assert prompt.tolist() == _hf_ids(checkpoint, text)
    assert int(np.sum(prompt == 1)) == 1
    # No special token closes the hub template's assistant turn: the model's </s> ends it.
    assert chat.end_id == 2
    assert prompt.tolist() != _chat(checkpoint, "training").prompt_ids(QUESTION, N).tolist()
