"""Both chat-template modes pinned against transformers' own rendering (apply_chat_template),
with the video placeholder expanded to the model's count: "training" (the family's ChatML, the
template LLaVA-OneVision was trained with) and "checkpoint" (the checkpoint's jinja template,
here the llava-hf LLaVA-OneVision hub template, which differs)."""

import os
import shutil

import ml_collections
import numpy as np
import pytest

from leanpo_jax.data.tokenize import ChatTokenizer
from leanpo_jax.models import resolve_model
from leanpo_jax.models.runtime import data_interface

from tiny_checkpoint import VIDEO_ID, make_checkpoint

transformers = pytest.importorskip("transformers")

# The chat_template of the llava-hf llava-onevision-qwen2-*-ov-hf repositories: "user " with a
# space, "\n" before each text, no newline between turns.
OV_HUB_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# ChatML as LLaVA-OneVision was trained (conv_qwen): "<|im_start|>role\n...<|im_end|>\n", the video
# first in the user turn followed by "\n".
TRAINING_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% for content in message['content'] %}{% if content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% else %}{{ content['text'] }}{% endif %}{% endfor %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
QUESTION, ANSWER, N = "What colour is the shape?", "It is red.", 17


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = make_checkpoint(str(tmp_path_factory.mktemp("chat") / "ckpt"))
    with open(os.path.join(folder, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(OV_HUB_TEMPLATE)
    return folder


def _messages(system, answer=None):
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]},
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def _hf_ids(folder, template, answer=None):
    """transformers: render, expand <video> to N placeholders, tokenise (special tokens parsed)."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    text = tok.apply_chat_template(_messages("You are a helpful assistant.", answer),
                                   chat_template=template, tokenize=False,
                                   add_generation_prompt=answer is None)
    return tok(text.replace("<video>", "<video>" * N), add_special_tokens=False)["input_ids"]


def _chat(folder, mode):
    data = ml_collections.ConfigDict({"chat_template": mode, "tokenizer": ""})
    return ChatTokenizer.for_model(data_interface(resolve_model(init_from=folder), data))


def test_training_template_equals_transformers_rendering_of_chatml(checkpoint):
    chat = _chat(checkpoint, "training")
    prompt = chat.prompt_ids(QUESTION, N)
    assert int(np.sum(prompt == VIDEO_ID)) == N
    assert prompt.tolist() == _hf_ids(checkpoint, TRAINING_CHATML)
    response, _ = chat.response_ids(ANSWER, 32)
    # The full conversation renders a final "\n" after <|im_end|>, which is not part of the labels.
    assert prompt.tolist() + response.tolist() == _hf_ids(checkpoint, TRAINING_CHATML, ANSWER)[:-1]


def test_checkpoint_template_equals_transformers_rendering_of_the_hub_template(checkpoint):
    chat = _chat(checkpoint, "checkpoint")
    prompt = chat.prompt_ids(QUESTION, N)
    assert prompt.tolist() == _hf_ids(checkpoint, None)  # the folder's chat_template.jinja
    assert prompt.tolist() != _chat(checkpoint, "training").prompt_ids(QUESTION, N).tolist()
    assert chat.end_id == chat.specials["<|im_end|>"] and chat.template.user_head == "<|im_start|>user "


def test_checkpoint_mode_needs_a_checkpoint_with_a_template(checkpoint, tmp_path):
    data = ml_collections.ConfigDict({"chat_template": "checkpoint", "tokenizer": ""})
    with pytest.raises(ValueError, match="model.init_from"):
        data_interface(resolve_model(preset="tiny"), data)
    bare = str(tmp_path / "bare")
    shutil.copytree(checkpoint, bare)
    os.remove(os.path.join(bare, "chat_template.jinja"))
    with pytest.raises(ValueError, match="no chat template"):
        data_interface(resolve_model(init_from=bare), data)
