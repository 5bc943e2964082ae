"""The seam every model family plugs into: one `Family` object per package, one registry line.

A family (leanpo_jax/models/<family>/) subclasses `Family` and provides, host side:
    presets                      name -> config (shapes only)
    accepts_hf(config_json)      whether a checkpoint's config.json is one of its models
    config_from_hf(folder)       its config from config.json (+ preprocessor configs)
    load_hf / save_hf            checkpoint I/O over every tensor naming it loads
    interface(config)            `data.contract.ModelInterface`: frames, video-token count,
                                 chat template, placeholder, default tokenizer, positions
    decoding_defaults(config)    self-generation decoding for winner / loser
    vision_flops(config, F)      forward FLOPs of encoding one video (MFU); families whose
                                 FramePolicy has a size_multiple also take size=(H, W)
    transformers_model(config)   (optional) the equivalent transformers class name + config.json
                                 dict, for reference runs (the benchmark's PyTorch peer)
and, device side, `build(config, rngs)` returning a model that implements the model protocol
(`MODEL_PROTOCOL`): encode_video, embed (placeholder merge), __call__, prefix / suffix /
packed, prefill / decode_step, lm_head_kernel, num_video_tokens, and the attributes `config`
and `vision_tower` (None for a text-only model). Positions are explicit arguments of every
entry point, so a family whose prompts need a host-computed position table (M-RoPE) supplies
it through `ModelInterface.positions_fn` and the batch's `prompt_positions`.

The config object of a family carries `dtype`, `param_dtype`, `attention_impl`, `remat`,
`vocab_size` through `.text.vocab_size`, and `.replace(**changes)`.
"""

from __future__ import annotations

import abc
from typing import Dict, Optional, Tuple

from flax import nnx

from leanpo_jax.data.contract import ModelInterface

# What data, training, generation and the benchmarks call on a model (see the docstring).
MODEL_PROTOCOL = ("encode_video", "embed", "__call__", "prefix", "suffix", "packed", "prefill",
                  "decode_step", "lm_head_kernel", "num_video_tokens")

# Self-generation decoding per side (docs/loss.md §5.4): Qwen-family checkpoints decode greedily (the
# default); LLaVA-NeXT-Video / Vicuna-era models sampled at T 1.0 with top-p 0.9 (winner), 1.0 (loser).
GREEDY = {"winner": dict(temperature=0.0, top_p=1.0), "loser": dict(temperature=0.0, top_p=1.0)}
NUCLEUS = {"winner": dict(temperature=1.0, top_p=0.9), "loser": dict(temperature=1.0, top_p=1.0)}


class Family(abc.ABC):
    """A model family (see the module docstring). Subclasses set `name`, `config_type` and
    `presets` and implement the abstract methods."""

    name: str = ""
    config_type: type = object
    presets: Dict[str, object] = {}

    # ---------------------------------------------------------------- configs and checkpoints
    @abc.abstractmethod
    def accepts_hf(self, config_json: dict) -> bool:
        """True when a checkpoint's config.json describes one of this family's models."""

    @abc.abstractmethod
    def config_from_hf(self, folder: str, config_json: dict):
        """The family config of the checkpoint in `folder` (config.json already parsed)."""

    @abc.abstractmethod
    def build(self, config, rngs):
        """A seeded model of `config` (nnx.Module implementing MODEL_PROTOCOL)."""

    @abc.abstractmethod
    def load_hf(self, path: str, *, config=None, dtype=None):
        """A model from an HF folder or bare .safetensors file (config= when it has none)."""

    @abc.abstractmethod
    def save_hf(self, model, out_dir: str, **kwargs) -> str:
        """Writes `model` as an HF folder transformers loads -> out_dir."""

    # ----------------------------------------------------------------------------- data side
    @abc.abstractmethod
    def interface(self, config, folder: Optional[str] = None) -> ModelInterface:
        """What the data side needs (frames, template, token counts) for `config`; `folder`:
        the checkpoint it came from (its own tokenizer and preprocessor config)."""

    @abc.abstractmethod
    def vision_flops(self, config, num_frames: int) -> float:
        """Forward FLOPs of encoding one video of `num_frames` frames (for MFU; 0 if text-only)."""

    def decoding_defaults(self, config) -> Dict[str, dict]:
        """{"winner": {temperature, top_p}, "loser": {...}} for self-generation."""
        del config
        return GREEDY

    # ------------------------------------------------------------------------ reference runs
    def transformers_model(self, config) -> Tuple[str, dict]:
        """(transformers model class name, config.json dict without "leanpo_jax" / "dtype") of an
        HF model equivalent to `config`, for reference runs (bench/torch_peer.py). Raises
        ValueError (the reason) when transformers has no equivalent of this config."""
        del config
        raise NotImplementedError(
            f"family {self.name!r} names no transformers equivalent: implement "
            f"{type(self).__name__}.transformers_model to give its configs a PyTorch peer")

    def transformers_video_inputs(self, config, frames) -> Dict[str, "np.ndarray"]:
        """The video keyword arguments of the transformers model of `transformers_model` for
        normalised frames [B, F, H, W, C] (numpy float32): LLaVA classes take
        pixel_values_videos [B, F, C, H, W]. Every value's axis 0 concatenates over batches."""
        del config
        return {"pixel_values_videos": frames.transpose(0, 1, 4, 2, 3)}

    def abstract(self, config):
        """The model with shape/dtype placeholders instead of arrays (no init pass)."""
        return nnx.eval_shape(lambda: self.build(config, nnx.Rngs(0)))


class CheckpointFamily(Family):
    """A family whose checkpoint code is one module `hf_io` (checkpoint_config, load_hf,
    save_hf) and whose model class is `model_class`: the seam's checkpoint methods then need
    no code of their own (`accepts_hf` stays the family's)."""

    hf_io = None
    model_class: type = object

    def config_from_hf(self, folder: str, config_json: dict):
        return self.hf_io.checkpoint_config(folder, config_json)

    def build(self, config, rngs):
        return self.model_class(config, rngs=rngs)

    def load_hf(self, path: str, *, config=None, dtype=None):
        return self.hf_io.load_hf(path, config=config, dtype=dtype)

    def save_hf(self, model, out_dir: str, **kwargs) -> str:
        return self.hf_io.save_hf(model, out_dir, **kwargs)

