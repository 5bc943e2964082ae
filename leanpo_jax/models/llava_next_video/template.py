"""The chat template LLaVA-NeXT-Video (Vicuna-7B v1.5, the Llama-2 tokenizer) was trained with:
LLaVA's conv_vicuna_v1 (separators " " and "</s>"), as a `contract.ChatTemplate`.

    prompt   = <s> {system} USER: [video placeholder ids]\\n{question} ASSISTANT:
    response = " {answer}</s>"

One BOS (<s>, id 1), put first as the tokenizer's post-processor would. The space after
"ASSISTANT:" is the response's: SentencePiece merges it into the answer's first token
("▁It"), so it sits in `response_prefix`; </s> ends the turn and is part of the labels.
"""

from __future__ import annotations

from leanpo_jax.data.contract import ChatTemplate

BOS, EOS = "<s>", "</s>"
VICUNA_SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. The "
                        "assistant gives helpful, detailed, and polite answers to the user's questions.")

VICUNA_V1 = ChatTemplate(
    system="{system} ", user_head="USER: ", after_video="\n", user_tail=" ASSISTANT:",
    response_end=EOS, specials=(BOS, EOS), default_system_prompt=VICUNA_SYSTEM_PROMPT, bos=BOS,
    response_prefix=" ")
