"""The model families and what every caller asks of them: presets, checkpoints, data interfaces.

    source = resolve_model(preset="tiny")                   # or init_from="/ckpt/folder"
    source.interface()                                      # what the data side needs
    model = source.build(seed=0) / source.load()            # the model
    load_hf(path) / save_hf(model, out) / build_model("tiny") / get_preset(name)

`FAMILIES` lists every family, one line each; `register` adds one at run time (tests, plug-ins).
A checkpoint folder picks its family by its config.json (`Family.accepts_hf`), a config
object by its type, a preset by the family that declares it (names are unique).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional

from flax import nnx

from leanpo_jax.data.contract import ModelInterface
from leanpo_jax.models.family import Family
from leanpo_jax.models.lora import adapted_decoders
from leanpo_jax.models.llava_next_video.family import FAMILY as LLAVA_NEXT_VIDEO
from leanpo_jax.models.llava_onevision.family import FAMILY as LLAVA_ONEVISION
from leanpo_jax.models.qwen_vl.family import FAMILY as QWEN_VL

# Order matters only for checkpoint detection: LLaVA-NeXT-Video's lmms-lab files also carry the
# mm_* keys that LLaVA-OneVision's accepts_hf takes, so it is asked first.
FAMILIES: List[Family] = [
    LLAVA_NEXT_VIDEO,
    LLAVA_ONEVISION,
    QWEN_VL,
]


def register(family: Family) -> Family:
    """Adds `family` (replacing one of the same name); its preset names must be new."""
    others = [f for f in FAMILIES if f.name != family.name]
    clash = sorted(set(family.presets) & {p for f in others for p in f.presets})
    if clash:
        raise ValueError(f"family {family.name!r}: preset names {clash} are already taken")
    FAMILIES[:] = others + [family]
    return family


def presets() -> Dict[str, object]:
    """Every family's presets, by name."""
    return {name: config for f in FAMILIES for name, config in f.presets.items()}


def preset_family(name: str) -> Family:
    for f in FAMILIES:
        if name in f.presets:
            return f
    raise ValueError(f"unknown model preset {name!r}; known presets: {sorted(presets())}")


def get_preset(name: str):
    return preset_family(name).presets[name]


def family_of(config) -> Family:
    """The family of a config object: the one whose config_type is its exact type, else the
    first it is an instance of (a plug-in may subclass a family's config)."""
    for f in FAMILIES:
        if type(config) is f.config_type:
            return f
    for f in FAMILIES:
        if isinstance(config, f.config_type):
            return f
    raise TypeError(f"no registered model family has config type {type(config).__name__}; "
                    f"families: {[f.name for f in FAMILIES]}")


def _read_config_json(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: no config.json (model.init_from must be an HF checkpoint "
                                "folder: config.json + *.safetensors)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def checkpoint_family(folder: str, config_json: Optional[dict] = None) -> Family:
    """The family whose `accepts_hf` takes the folder's config.json."""
    d = _read_config_json(folder) if config_json is None else config_json
    for f in FAMILIES:
        if f.accepts_hf(d):
            return f
    raise ValueError(f"{os.path.join(folder, 'config.json')}: model_type {d.get('model_type')!r} / "
                     f"architectures {d.get('architectures')} belong to no registered family "
                     f"({[f.name for f in FAMILIES]})")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A model to start from: its family, config and the checkpoint folder (None: a preset);
    `adapter`: a PEFT LoRA folder whose weights replace the fresh adapters (config.lora is the
    folder's)."""

    family: Family
    config: object
    folder: Optional[str] = None
    preset: Optional[str] = None
    adapter: Optional[str] = None

    @property
    def where(self) -> str:
        return self.folder if self.folder else f"preset {self.preset!r}"

    def interface(self) -> ModelInterface:
        return self.family.interface(self.config, self.folder).replace(source=self.where)

    def replace_config(self, **changes) -> "ModelSource":
        return dataclasses.replace(self, config=self.config.replace(**changes))

    def build(self, seed: int = 0):
        """A seeded random model of the config (presets)."""
        return self._with_adapter(self.family.build(self.config, nnx.Rngs(int(seed))))

    def _with_adapter(self, model):
        if self.adapter:
            from leanpo_jax.models.peft_io import load_peft_adapter  # pylint: disable=import-outside-toplevel

            load_peft_adapter(model, self.adapter)
        return model

    def load(self, dtype=None, seed: int = 0):
        """The checkpoint's weights in the model of this source's config: the stored dtypes (or
        `dtype`) for the parameters, the config's compute dtype, attention kernel and remat;
        with config.lora, fresh adapters (A drawn from `seed`, B = 0) on the loaded base."""
        if self.folder is None:
            raise ValueError(f"{self.where} has no checkpoint to load; build() it instead")
        loaded = self.family.load_hf(self.folder, config=self.config.replace(lora=None), dtype=dtype)
        # The loader builds with the stored dtype as compute dtype and no remat; rebuild the
        # module graph with this config's runtime fields around the loaded arrays.
        target = self.family.abstract(self.config.replace(param_dtype=loaded.config.param_dtype))
        nnx.update(target, nnx.state(loaded))
        if getattr(self.config, "lora", None) is not None:
            rngs = nnx.Rngs(int(seed))
            for decoder in adapted_decoders(target):
                decoder.init_adapters(rngs)
        return self._with_adapter(target)


def resolve_model(preset: str = "", init_from: str = "") -> ModelSource:
    """The checkpoint folder `init_from` when set (it decides the family and the config), else
    the named preset."""
    if init_from:
        folder = os.path.abspath(os.fspath(init_from))
        d = _read_config_json(folder)
        family = checkpoint_family(folder, d)
        return ModelSource(family, family.config_from_hf(folder, d), folder=folder)
    if not preset:
        raise ValueError("no model: set model.preset (a preset name) or model.init_from (an HF folder)")
    return ModelSource(preset_family(preset), get_preset(preset), preset=preset)


# ----------------------------------------------------------------------------- the public API
def build_model(config, *, seed: int = 0):
    """Seeded random init of a preset name or a family config."""
    if isinstance(config, str):
        config = get_preset(config)
    return family_of(config).build(config, nnx.Rngs(int(seed)))


def abstract_model(config):
    """The model with shape/dtype placeholders instead of arrays (no init pass), for streaming."""
    return family_of(config).abstract(config)


def load_hf(path, *, config=None, preset: Optional[str] = None, dtype=None):
    """A model from an HF folder (config.json + safetensors; its config.json picks the family)
    or a bare .safetensors file with `config=` / `preset=`; the stored dtype is kept unless
    `dtype` is given."""
    if config is not None and preset is not None:
        raise ValueError("pass config= or preset=, not both")
    path = os.fspath(path)
    if preset is not None:
        config = get_preset(preset)
    if config is not None:
        return family_of(config).load_hf(path, config=config, dtype=dtype)
    if not os.path.isdir(path):
        raise ValueError(f"{path}: a bare weights file has no config.json, so the model shape is "
                         f"unknown; pass config=... or preset=<one of {sorted(presets())}>")
    return checkpoint_family(path).load_hf(path, dtype=dtype)


def save_hf(model, out_dir, **kwargs) -> str:
    """Writes `model` as an HF folder (its family's naming, config.json, preprocessor configs)."""
    return family_of(model.config).save_hf(model, os.fspath(out_dir), **kwargs)


def num_video_tokens(config, num_frames: Optional[int] = None) -> int:
    """Placeholder ids one video of `num_frames` frames (default: the config's) occupies."""
    interface = family_of(config).interface(config)
    if not interface.has_video:
        raise ValueError("this model has no vision tower (text-only config): it takes no video")
    frames = getattr(config, "num_frames", None) if num_frames is None else num_frames
    return interface.video_tokens(int(frames))
