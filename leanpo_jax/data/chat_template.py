"""A checkpoint's own chat template (jinja) as a `contract.ChatTemplate`: render with sentinels, split.

    template = checkpoint_template(folder, video_token="<video>", specials=[...])

The jinja template is read from the folder's `chat_template.jinja`, `chat_template.json`
({"chat_template": ...}) or `tokenizer_config.json` ("chat_template": a string, or a list of
{"name", "template"} where "default" is used), and rendered by transformers' own renderer
(`render_jinja_template`, the code behind `apply_chat_template`) for one conversation:

    system: SYSTEM_SENTINEL;  user: [video, text QUESTION_SENTINEL];  + generation prompt
    (and once more with an assistant message ANSWER_SENTINEL, to find the response end)

The rendered text is then cut at the sentinels and at the video token into the pieces of a
ChatTemplate, so ChatTokenizer builds exactly the ids of the rendered text (with the video
placeholder expanded to the model's count). `data.chat_template = "checkpoint"` selects it.
Known difference (why "training" is the default): LLaVA-OneVision's hub template writes
"<|im_start|>user " (a space, no newline) and no newline between turns, while the models were
trained with ChatML's "<|im_start|>user\\n...<|im_end|>\\n".
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Optional

from tokenizers import Tokenizer

from leanpo_jax.data.contract import ChatTemplate
from leanpo_jax.data.tokenize import tokenizer_file

SYSTEM_SENTINEL = "LEANPOSYSTEMSENTINEL"
QUESTION_SENTINEL = "LEANPOQUESTIONSENTINEL"
ANSWER_SENTINEL = "LEANPOANSWERSENTINEL"
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")


def read_chat_template(folder: str) -> Optional[tuple]:
    """(jinja source, file it came from) of the folder's chat template, None when it has none."""
    for name in TEMPLATE_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".jinja"):
            with open(path, encoding="utf-8") as f:
                return f.read(), path
        with open(path, encoding="utf-8") as f:
            template = json.load(f).get("chat_template")
        if isinstance(template, list):  # named templates: take "default"
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if template:
            return template, path
    return None


def _render(source: str, messages: list, generation_prompt: bool, **tokens) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], chat_template=source,
                                        add_generation_prompt=generation_prompt, **tokens)
    return rendered[0]


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def render_template(source: str, *, video_token: str, specials: Iterable[str], where: str,
                    default_system_prompt: Optional[str] = None, bos: Optional[str] = None,
                    eos: Optional[str] = None, added_bos: Optional[str] = None) -> ChatTemplate:
    """The ChatTemplate of jinja `source` (see the module docstring). `specials`: the
    tokenizer's special tokens (those found in the rendering become the template's);
    `bos` / `eos`: the tokenizer's bos_token / eos_token strings (templates may print them);
    `added_bos`: the token the tokenizer's post-processor puts first (Llama's <s>), which the
    prompt then starts with unless the template prints it itself. An assistant turn that no
    special token closes (the llava-hf vicuna template ends it with " ") ends with `eos`, the
    token the model emits to stop."""
    tokens = {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
    user = {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION_SENTINEL}]}
    system = {"role": "system", "content": [{"type": "text", "text": SYSTEM_SENTINEL}]}
    prompt = _render(source, [system, user], True, **tokens)
    answer = {"role": "assistant", "content": [{"type": "text", "text": ANSWER_SENTINEL}]}
    full = _render(source, [system, user, answer], False, **tokens)
    missing = [n for n, s in (("system prompt", SYSTEM_SENTINEL), ("question", QUESTION_SENTINEL),
                              ("video", video_token)) if s not in prompt]
    if missing or ANSWER_SENTINEL not in full:
        raise ValueError(f"{where}: the chat template does not render the {', '.join(missing) or 'answer'} "
                         "of a system + user(video, text) conversation; use data.chat_template='training'")
    sys_at, q_at, v_at = (prompt.index(x) for x in (SYSTEM_SENTINEL, QUESTION_SENTINEL, video_token))
    first_user = min(q_at, v_at)
    if not sys_at < first_user:
        raise ValueError(f"{where}: the chat template puts the system prompt after the user turn")
    found = sorted({s for s in specials if s != video_token and (s in prompt or s in full)}, key=len,
                   reverse=True)
    after_answer = full[full.index(ANSWER_SENTINEL) + len(ANSWER_SENTINEL):]
    ends = [(after_answer.find(s), s) for s in found if s in after_answer]
    if not ends and eos and eos in specials:
        ends, found = [(0, eos)], sorted(set(found) | {eos}, key=len, reverse=True)
    if not ends:
        raise ValueError(f"{where}: no special token ends the assistant turn in the chat template "
                         "and the tokenizer names no eos_token; use data.chat_template='training'")
    end = min(ends)[1]
    # The system turn runs to the end token that closes it (and the whitespace after it); the
    # user turn's head follows, so a run without a system prompt keeps it.
    # A template may print the system text more than once (llava-hf's vicuna template does):
    # the system part runs to the last copy before the user turn, every copy is {system}.
    after_sys = prompt.rfind(SYSTEM_SENTINEL, 0, first_user) + len(SYSTEM_SENTINEL)
    close = prompt.find(end, after_sys)
    boundary = after_sys
    if 0 <= close < first_user:
        boundary = close + len(end)
        while boundary < first_user and prompt[boundary] in " \n":
            boundary += 1
    start, first = 0, None
    if bos and prompt.startswith(bos):
        start, first = len(bos), bos
    elif added_bos:
        first = added_bos
        found = sorted(set(found) | {added_bos}, key=len, reverse=True)
    system_text = _escape(prompt[start:boundary]).replace(SYSTEM_SENTINEL, "{system}")
    common = dict(system=system_text, user_head=prompt[boundary:first_user], response_end=end,
                  specials=tuple(found), default_system_prompt=default_system_prompt, bos=first)
    if v_at < q_at:
        return ChatTemplate(after_video=prompt[v_at + len(video_token):q_at],
                            user_tail=prompt[q_at + len(QUESTION_SENTINEL):], **common)
    return ChatTemplate(after_video="", user_tail=prompt[v_at + len(video_token):], video_first=False,
                        before_video=prompt[q_at + len(QUESTION_SENTINEL):v_at], **common)


def _token_text(value) -> Optional[str]:
    return value.get("content") if isinstance(value, dict) else value


def checkpoint_template(folder: str, tokenizer_json: str, *, video_token: str,
                        default_system_prompt: Optional[str]) -> ChatTemplate:
    """The ChatTemplate of the checkpoint in `folder` (its chat template rendered with the
    special tokens of `tokenizer_json`); ValueError naming the folder when it has none."""
    found = read_chat_template(folder)
    if found is None:
        raise ValueError(f"data.chat_template='checkpoint' but {folder} has no chat template "
                         f"({', '.join(TEMPLATE_FILES)}); use data.chat_template='training'")
    source, where = found
    tok = Tokenizer.from_file(tokenizer_json)
    specials = [t.content for t in tok.get_added_tokens_decoder().values() if t.special]
    config = {}
    config_file = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    return render_template(source, video_token=video_token, specials=specials, where=where,
                           default_system_prompt=default_system_prompt,
                           bos=_token_text(config.get("bos_token")), eos=_token_text(config.get("eos_token")),
                           added_bos=_post_processor_bos(tok))


def _post_processor_bos(tok: Tokenizer) -> Optional[str]:
    """The special token the tokenizer's post-processor prepends to a single text (None: none)."""
    plain = tok.encode("a", add_special_tokens=False).ids
    full = tok.encode("a", add_special_tokens=True).ids
    if len(full) > len(plain) and full[len(full) - len(plain):] == plain:
        return tok.id_to_token(full[0])
    return None


def with_chat_template(model, data, folder: Optional[str]):
    """`model` (a ModelInterface) with the template data.chat_template asks for: "training"
    keeps the family's; "checkpoint" renders the checkpoint folder's own."""
    mode = data.get("chat_template", "training")
    if mode == "training":
        return model
    if mode != "checkpoint":
        raise ValueError(f"config data.chat_template={mode!r}: expected 'training' or 'checkpoint'")
    if folder is None or model.video_token is None:
        raise ValueError(f"data.chat_template='checkpoint' needs a checkpoint (model.init_from); "
                         f"{model.source} has no chat template of its own")
    template = checkpoint_template(folder, tokenizer_file(data.get("tokenizer") or model.tokenizer),
                                   video_token=model.video_token,
                                   default_system_prompt=model.template.default_system_prompt)
    return model.replace(template=template)
