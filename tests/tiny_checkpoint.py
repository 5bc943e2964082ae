"""A tiny LLaVA-OneVision checkpoint folder with its own tokenizer and preprocessor config.

The tokenizer is the default Qwen one plus "<image>" / "<video>" as added special tokens
(ids 151669 / 151670, like llava-hf's own added tokens), so the folder is a complete model:
config.json names the placeholder, tokenizer.json holds it, the preprocessor configs give the
frame statistics (non-default mean/std, so a test sees they are read).
"""

import dataclasses
import json
import os

from tokenizers import AddedToken, Tokenizer

from leanpo_jax.data import tokenize
from leanpo_jax.models import build_model, get_preset, save_hf

IMAGE_ID, VIDEO_ID = 151669, 151670
MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)


def tiny_config(num_frames: int = 4):
    config = get_preset("tiny")
    vision = dataclasses.replace(config.vision, image_mean=MEAN, image_std=STD)
    return config.replace(vision=vision, image_token_index=IMAGE_ID, video_token_index=VIDEO_ID,
                          num_frames=num_frames)


def own_tokenizer(folder: str) -> str:
    """The Qwen tokenizer + <image>, <video> special tokens, saved as folder/tokenizer.json."""
    tok = Tokenizer.from_file(tokenize.tokenizer_file(""))
    tok.add_special_tokens([AddedToken("<image>", special=True, normalized=False),
                            AddedToken("<video>", special=True, normalized=False)])
    assert tok.token_to_id("<video>") == VIDEO_ID, tok.token_to_id("<video>")
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "Qwen2TokenizerFast", "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "model_max_length": 32768}, f)
    return folder


def make_checkpoint(folder: str, *, seed: int = 0, num_frames: int = 4) -> str:
    """Writes the tiny checkpoint (weights, config.json, preprocessor configs, tokenizer)."""
    save_hf(build_model(tiny_config(num_frames), seed=seed), folder)
    return own_tokenizer(folder)
