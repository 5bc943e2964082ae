"""Parameter construction shared by the model modules: logical axis names, inits, holders.

Every parameter carries logical axis names (`out_sharding` metadata, one per dimension; None =
replicated) that `nnx.logical_axis_rules` maps to mesh axes. Sharding happens at creation only
when a mesh and rules are both active, so every module also builds on one CPU device.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx
from flax.core import spmd as flax_spmd


def logical_param(value: jax.Array, names: tuple, eager: Optional[bool] = None, *, kind=nnx.Param) -> nnx.Param:
    """An `nnx.Param` annotated with logical axis `names` (one per dim; None = replicated).

    Flax's eager sharding needs a mesh and rules; without both (single-device tests, plain
    CPU builds) the names are kept as metadata only and `nnx.get_partition_spec` /
    `nnx.get_named_sharding` under `nnx.logical_axis_rules` map them later. `eager` forces
    the choice either way. `kind`: the Param subclass (e.g. lora.LoRAParam).
    """
    if len(names) != value.ndim:
        raise ValueError(f"{len(names)} axis names {names} for a {value.ndim}-d parameter")
    if eager is None:
        eager = (
            nnx.using_eager_sharding()
            and not jax.sharding.get_abstract_mesh().empty
            and bool(flax_spmd.get_logical_axis_rules())
        )
    return kind(value, out_sharding=tuple(names), eager_sharding=eager)


def normal_init(rngs: nnx.Rngs, shape, std: float, dtype) -> jax.Array:
    """std · N(0, 1) drawn in f32 from the `params` stream, cast to dtype."""
    return (jax.random.normal(rngs.params(), shape, jnp.float32) * std).astype(dtype)


class Dense(nnx.Module):
    """A kernel/bias parameter pair (no forward: callers contract it with einsum / matmul).
    Kernel init: normal with std fan_in**-0.5; bias init: zeros."""

    def __init__(self, kernel_shape, kernel_axes, bias_shape, bias_axes, *, fan_in: int,
                 param_dtype, rngs: nnx.Rngs):
        self.kernel = logical_param(normal_init(rngs, kernel_shape, fan_in**-0.5, param_dtype),
                                    kernel_axes)
        self.bias = logical_param(jnp.zeros(bias_shape, param_dtype), bias_axes)


class LayerNormParams(nnx.Module):
    """LayerNorm scale (init 1) and bias (init 0)."""

    def __init__(self, shape, axes, *, param_dtype):
        self.scale = logical_param(jnp.ones(shape, param_dtype), axes)
        self.bias = logical_param(jnp.zeros(shape, param_dtype), axes)


def num_params(module: nnx.Module) -> int:
    """Total parameter count of an NNX module (abstract or concrete)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
