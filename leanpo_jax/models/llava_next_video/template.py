"""The vicuna_v1 conversation LLaVA-NeXT-Video was trained with (placeholder until the tokenizer work lands)."""

from leanpo_jax.data.contract import ChatTemplate

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
                 "gives helpful, detailed, and polite answers to the user's questions.")
VICUNA_V1 = ChatTemplate(
    system="{system} ", user_head="USER: ", after_video="\n", user_tail=" ASSISTANT:",
    response_end="</s>", specials=("<s>", "</s>"), default_system_prompt=VICUNA_SYSTEM, bos="<s>")
