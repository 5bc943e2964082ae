"""LoRA adapters on the language model's linear layers, as explicit float32 parameters.

    y = x W + scale · (x A) B,   scale = alpha / r   (alpha / sqrt(r) with use_rslora)

For each targeted projection of the stacked decoder (qwen2.DecoderLayers: q/k/v/o, gate/up/
down) the layers hold `{name}_lora_a` [L, in..., r] and `{name}_lora_b` [L, r, out...]
(`LoRAParam`, float32 whatever the base dtype; logical axes: the base weight's input axes + a
replicated rank axis, and the rank axis + its output axes) and `{name}_lora_scale` [L], scale on
targeted layers and 0 elsewhere (a regex may target some layers only; an untargeted layer's
adapter then contributes nothing and receives zero gradient). B starts at zero, so a fresh
adapter leaves the model unchanged; A as PEFT draws it (kaiming-uniform, a = sqrt(5): bound
1 / sqrt(fan_in)).

Targets (`LoRAConfig.target_modules`, PEFT's semantics) are matched against the HF module names
of the language model in transformers 5 memory (`<prefix>layers.{i}.self_attn.q_proj`, prefix
"model." for a text model, "model.language_model." for the Video-LLM classes): a tuple of names
matches a module whose name equals one or ends with "." + one; a string is a regex that must
`re.fullmatch` the whole name; () means every linear layer of the language model. Vision towers
take no adapters.

Dropout (`LoRAConfig.dropout` = p) acts on each adapter's input only, as PEFT's does:
scale · (dropout(x) A) B with an independent mask per projection and layer. It is on only
inside `adapter_dropout(key)`, which the train step opens around the policy's forward (trace
time): generation, scoring and evaluation never drop. The masks derive from the key alone
(`layer_keys`, `dropout_key_of`), so a resumed run redraws the same ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import re
from typing import Dict, List, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from leanpo_jax.models.params import logical_param

# Decoder parameter -> (HF module inside layer i, input axes of its kernel).
PROJECTIONS = {
    "q_kernel": ("self_attn.q_proj", 1), "k_kernel": ("self_attn.k_proj", 1),
    "v_kernel": ("self_attn.v_proj", 1), "o_kernel": ("self_attn.o_proj", 2),
    "gate_kernel": ("mlp.gate_proj", 1), "up_kernel": ("mlp.up_proj", 1), "down_kernel": ("mlp.down_proj", 1),
}


class LoRAParam(nnx.Param):
    """An adapter matrix: the only trainable parameters of a LoRA run."""


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """rank 0 = no adapters. See the module docstring for `target_modules`."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    use_rslora: bool = False
    target_modules: Union[Tuple[str, ...], str] = ()

    def __post_init__(self):
        if int(self.rank) < 0:
            raise ValueError(f"model.lora.rank={self.rank!r}: expected >= 0 (0 = no adapters)")
        if not self.alpha > 0:
            raise ValueError(f"model.lora.alpha={self.alpha!r}: expected > 0")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"model.lora.dropout={self.dropout!r}: expected a rate in [0, 1)")
        if not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    @property
    def enabled(self) -> bool:
        return int(self.rank) > 0

    @property
    def scale(self) -> float:
        r = int(self.rank)
        return float(self.alpha) / (math.sqrt(r) if self.use_rslora else r)


def module_names(num_layers: int, prefix: str) -> List[Tuple[str, int, str]]:
    """(HF module name, layer, decoder parameter) of every adaptable linear layer."""
    return [(f"{prefix}layers.{i}.{module}", i, name)
            for i in range(num_layers) for name, (module, _) in PROJECTIONS.items()]


def _matches(target: Union[Tuple[str, ...], str], module: str) -> bool:
    if isinstance(target, str):
        return re.fullmatch(target, module) is not None
    leaf_targets = target or tuple(m for m, _ in PROJECTIONS.values())
    return any(module == t or module.endswith("." + t) for t in leaf_targets)


def resolve_targets(cfg: LoRAConfig, num_layers: int, prefix: str) -> Dict[str, np.ndarray]:
    """{decoder parameter: bool [L] of the layers it is adapted in} for the matched modules;
    a target that matches no module is a ValueError listing some of the names."""
    names = module_names(num_layers, prefix)
    mask = {name: np.zeros(num_layers, bool) for name in PROJECTIONS}
    for module, layer, name in names:
        if _matches(cfg.target_modules, module):
            mask[name][layer] = True
    mask = {name: m for name, m in mask.items() if m.any()}
    if not mask:
        examples = ", ".join(m for m, _, _ in names[:len(PROJECTIONS)])
        raise ValueError(f"model.lora.target_modules={cfg.target_modules!r} matches no linear layer of the "
                         f"language model; its modules are named like {examples} (a regex must match a whole "
                         "name; names match a module's last parts)")
    return mask


def add_adapters(layers, kernel_axes: Dict[str, tuple], cfg: LoRAConfig, num_layers: int, prefix: str,
                 rngs: nnx.Rngs) -> None:
    """Gives the stacked decoder `layers` its adapters (module docstring); `kernel_axes`: the
    logical axes of each base kernel [L, in..., out...]."""
    r = int(cfg.rank)
    for name, layers_on in resolve_targets(cfg, num_layers, prefix).items():
        kernel = getattr(layers, name)
        shape, axes, n_in = kernel.shape, kernel_axes[name], PROJECTIONS[name][1]
        ins, outs = shape[1:1 + n_in], shape[1 + n_in:]
        bound = 1.0 / math.sqrt(math.prod(ins))  # kaiming_uniform(a=sqrt(5)) of a [r, fan_in] weight
        a = jax.random.uniform(rngs.params(), (num_layers, *ins, r), jnp.float32, -bound, bound)
        setattr(layers, f"{name}_lora_a", logical_param(a, (axes[0], *axes[1:1 + n_in], None), kind=LoRAParam))
        b = jnp.zeros((num_layers, r, *outs), jnp.float32)
        setattr(layers, f"{name}_lora_b", logical_param(b, (axes[0], None, *axes[1 + n_in:]), kind=LoRAParam))
        scale = np.where(layers_on, cfg.scale, 0.0).astype(np.float32)
        setattr(layers, f"{name}_lora_scale", nnx.Variable(jnp.asarray(scale)))


def adapter_arrays(layers) -> dict:
    """The stacked adapter arrays of `layers` by name (empty without adapters)."""
    out = {}
    for name in PROJECTIONS:
        if hasattr(layers, f"{name}_lora_a"):
            for part in ("a", "b", "scale"):
                out[f"{name}_lora_{part}"] = getattr(layers, f"{name}_lora_{part}")[...]
    return out


# The train step's dropout key while its forward is traced (adapter_dropout); None elsewhere.
_DROPOUT = contextvars.ContextVar("leanpo_lora_dropout", default=None)


@contextlib.contextmanager
def adapter_dropout(key):
    """Adapters of decoders whose LoRAConfig has dropout > 0 drop their inputs while this
    context is open at trace time; each decoder run inside takes the next key of `key`."""
    token = _DROPOUT.set([key, 0])
    try:
        yield
    finally:
        _DROPOUT.reset(token)


def layer_keys(cfg: Optional[LoRAConfig], num_layers: int):
    """[L] dropout keys for one decoder run (the k-th run in the open context uses
    fold_in(key, k) split L ways), or None when nothing drops."""
    state = _DROPOUT.get()
    if state is None or cfg is None or not float(cfg.dropout) > 0:
        return None
    key, k = state
    state[1] = k + 1
    return jax.random.split(jax.random.fold_in(key, k), num_layers)


def dropout_key_of(layer_key, name: str):
    """The mask key of projection `name` in a layer (independent per projection, as PEFT's)."""
    return jax.random.fold_in(layer_key, list(PROJECTIONS).index(name))


def drop(x: jax.Array, key, rate: float) -> jax.Array:
    """Inverted dropout: x / (1 - rate) where bernoulli(key, 1 - rate, x.shape), else 0."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def project(p: dict, name: str, x: jax.Array, equation: str, dropout=None) -> jax.Array:
    """One layer's projection `name` of x (p: the layer's slices): einsum(equation, x, W) plus
    scale · (x' A) B when the layer carries an adapter for it; x' = x, or with
    dropout=(layer_key, rate) drop(x, dropout_key_of(layer_key, name), rate)."""
    out = jnp.einsum(equation, x, p[name])
    if f"{name}_lora_a" not in p:
        return out
    n_in = PROJECTIONS[name][1]
    if dropout is not None:
        x = drop(x, dropout_key_of(dropout[0], name), dropout[1])
    low = jnp.tensordot(x, p[f"{name}_lora_a"].astype(x.dtype), axes=n_in)
    return out + p[f"{name}_lora_scale"].astype(x.dtype) * jnp.tensordot(low, p[f"{name}_lora_b"].astype(x.dtype), 1)


def merged_kernel(kernel: jax.Array, a: jax.Array, b: jax.Array, scale: jax.Array) -> jax.Array:
    """W + scale · A B per layer for stacked [L, in..., out...] kernels, in W's dtype."""
    delta = jnp.einsum("lir,lro->lio", a.reshape(a.shape[0], -1, a.shape[-1]).astype(jnp.float32),
                       b.reshape(b.shape[0], b.shape[1], -1).astype(jnp.float32))
    delta = delta.reshape(kernel.shape) * scale.reshape((-1,) + (1,) * (kernel.ndim - 1))
    return (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)


def adapted_decoders(model) -> list:
    """The modules of `model` that carry LoRA adapters (decoders with `.lora` set and `.layers`)."""
    return [m for _, m in nnx.iter_graph(model) if getattr(m, "lora", None) is not None and hasattr(m, "layers")]


def lora_of(config) -> Optional[LoRAConfig]:
    """The LoRA settings a family config carries (None / rank 0: none)."""
    cfg = getattr(config, "lora", None)
    return cfg if cfg is not None and cfg.enabled else None
