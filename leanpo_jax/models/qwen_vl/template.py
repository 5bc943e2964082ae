"""The Qwen2-VL / Qwen2.5-VL chat template: Qwen2 ChatML with the video wrapped in vision tokens.

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|> [video_pad ids] <|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n

(what the checkpoints' chat template renders for one video and a question); the response ends
with <|im_end|>. The vision tokens appear only when the prompt has a video.
"""

from __future__ import annotations

from leanpo_jax.data import tokenize
from leanpo_jax.data.contract import ChatTemplate

VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
QWEN_VL_CHATML = ChatTemplate(
    system=tokenize.CHATML.system, user_head=tokenize.CHATML.user_head, before_video=VISION_START,
    after_video=VISION_END, user_tail=tokenize.CHATML.user_tail, response_end=tokenize.IM_END,
    specials=tokenize.CHATML.specials + (VISION_START, VISION_END),
    default_system_prompt=tokenize.DEFAULT_SYSTEM_PROMPT)
