"""The LLaVA-OneVision / LLaVA-Video family behind the seam (models/family.py).

Covers llava-hf `LlavaOnevisionForConditionalGeneration`, lmms-lab `LlavaQwenForCausalLM`
(LLaVA-Video-7B-Qwen2) and plain Qwen2 / Llama causal-LM checkpoints (text-only configs).
Host side: frames are resized directly to the tower's square size (SigLIP, no crop) and
normalised with the checkpoint's mean/std; a video of F frames takes
`config.num_video_tokens(config, F)` placeholder ids; the chat template is Qwen2 ChatML (the
training template; the hub template differs, see data/chat_template.py); decoding for
self-generation is greedy (Qwen-family checkpoints).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

from leanpo_jax.data import tokenize
from leanpo_jax.data.contract import FramePolicy, ModelInterface
from leanpo_jax.data.tokenizer_files import model_tokenizer_dir
from leanpo_jax.models.family import CheckpointFamily
from leanpo_jax.models.llava_onevision import hf_io
from leanpo_jax.models.llava_onevision.config import PRESETS, VideoLLMConfig, num_video_tokens
from leanpo_jax.models.llava_onevision.hf_config import FAMILY_NAME, is_family_config, transformers_equivalent
from leanpo_jax.models.llava_onevision.model import VideoLLM


class LlavaOnevisionFamily(CheckpointFamily):
    name = FAMILY_NAME
    config_type = VideoLLMConfig
    presets = PRESETS

    hf_io = hf_io
    model_class = VideoLLM

    def accepts_hf(self, config_json: dict) -> bool:
        return is_family_config(config_json)

    def interface(self, config: VideoLLMConfig, folder: Optional[str] = None) -> ModelInterface:
        tokenizer = model_tokenizer_dir(folder, config.text.vocab_size)
        v = config.vision
        return ModelInterface(
            family=self.name, vocab_size=config.text.vocab_size,
            video_token_index=None if v is None else config.video_token_index,
            frames=None if v is None else FramePolicy(size=(v.image_size, v.image_size), resize="direct",
                                                      mean=tuple(v.image_mean), std=tuple(v.image_std)),
            template=tokenize.CHATML,
            video_tokens_fn=None if v is None else functools.partial(num_video_tokens, config),
            # Only a checkpoint's tokenizer is checked against the placeholder's text.
            video_token=None if folder is None or v is None else config.video_token,
            tokenizer=tokenizer)

    def transformers_model(self, config: VideoLLMConfig) -> Tuple[str, dict]:
        """Qwen2ForCausalLM / LlamaForCausalLM (text-only) or LlavaOnevisionForConditionalGeneration
        and its config.json dict; ValueError for LLaVA-Video's grid newlines or average pooling."""
        return transformers_equivalent(config)

    def vision_flops(self, config: VideoLLMConfig, num_frames: int) -> float:
        """Forward FLOPs of SigLIP + projector on one video (matmuls and attention scores)."""
        v = config.vision
        if v is None:
            return 0.0
        patches = v.num_patches
        per_layer = 4 * v.hidden_size ** 2 + 2 * v.hidden_size * v.intermediate_size
        tower = 2.0 * num_frames * patches * (v.num_layers * per_layer + 3 * patches * v.hidden_size)
        tower += 2.0 * num_frames * patches * 2 * patches * v.hidden_size * v.num_layers  # scores
        d = config.text.hidden_size
        projector = 2.0 * num_frames * patches * (v.hidden_size * d + d * d)
        return tower + projector


FAMILY = LlavaOnevisionFamily()
