"""Train state: trainable / frozen parameter split, f32 master params, the optax chain.

    model_def, state = init_state(model, cfg, rng)       # cfg: the optimizer section (below)
    model = merge_model(model_def, state.params["trainable"], state.params["frozen"])

Split rule: a Param is *frozen* when the first element of its path is in `frozen` (default
`DEFAULT_FROZEN` = the vision tower and the connector, i.e. projector + image newline, as the
paper trains the LLM only); every other Param is trainable. Non-Param variables (HF extras) go
to `ModelDef.other` and never change.

`TrainState` is a plain pytree (flax.struct dataclass): {params: {trainable, frozen}, opt_state,
step, rng}. `params["trainable"]` is stored in float32 whatever the model's param dtype (master
weights; the model casts to its compute dtype per layer); frozen params keep their dtype.

Optimizer (`make_optimizer(cfg)`), keys of a dict / ConfigDict with their ranges:
  learning_rate  float > 0          peak learning rate
  schedule       "linear" | "cosine" | "constant"   after warmup: linear decay to 0 at
                 total_steps, cosine decay to 0 at total_steps, or constant
  warmup_ratio   float in [0, 1)    warmup_steps = ceil(warmup_ratio * total_steps), linear 0 -> lr
  total_steps    int >= 1           sets the schedule (not where a run stops)
  weight_decay   float >= 0         decoupled (AdamW), applied to every trainable leaf
  max_grad_norm  float > 0, or <= 0 / None = no clipping (global norm over trainable leaves)
  b1, b2, eps    Adam moments (defaults 0.9, 0.999, 1e-8)
  max_consecutive_skips  int >= 1 (default 2**30): passed to optax.apply_if_finite; the trainer
                 stops before it is reached, so a non-finite update is never applied.
The chain is apply_if_finite(chain(clip_by_global_norm, adamw(schedule))): a step whose
gradients hold a NaN/Inf leaves params and the Adam state untouched (its count, hence the
schedule position inside Adam, does not advance) and increments `notfinite_count`
(consecutive; reset by a finite step) and `total_notfinite` (see `skip_counts`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from leanpo_jax.config_schema import Block, Field

DEFAULT_FROZEN: Tuple[str, ...] = ("vision_tower", "connector")
SCHEDULES = ("linear", "cosine", "constant")

# The `optimizer` block of every config (the paper's recipe), one source of its defaults.
OPTIMIZER = Block(
    "AdamW with warmup and decay, global-norm clipping",
    learning_rate=Field(5e-7, "Peak learning rate (paper: 5e-7 for 7B models)", rule="> 0"),
    schedule=Field("linear", 'After warmup: "linear" (to 0 at total_steps) | "cosine" (to 0) | '
                   '"constant"', choices=SCHEDULES),
    warmup_ratio=Field(0.1, "Warmup steps = ceil(warmup_ratio * total_steps), linear from 0",
                       rule="in [0, 1)"),
    weight_decay=Field(0.0, "Decoupled (AdamW) weight decay (paper: 0)", rule=">= 0"),
    max_grad_norm=Field(1.0, "Global-norm clipping threshold; <= 0 disables clipping"),
    b1=Field(0.9, "Adam first-moment decay", rule="in [0, 1)"),
    b2=Field(0.999, "Adam second-moment decay", rule="in [0, 1)"),
    eps=Field(1e-8, "Adam epsilon", rule=">= 0"),
)
# make_schedule / make_optimizer also read total_steps and max_consecutive_skips, which the
# trainer passes; these defaults serve direct library calls.
OPTIMIZER_DEFAULTS = {**OPTIMIZER.defaults(), "total_steps": 1000, "max_consecutive_skips": 2**30}


def cfg_get(cfg: Any, key: str, default=None):
    """cfg[key] for dicts, ConfigDicts and plain objects; `default` when absent or None."""
    if cfg is None:
        return default
    # dicts and ConfigDicts have .get; dataclasses and namespaces use attributes.
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """What is needed, besides the params, to rebuild the model inside a jitted function."""

    graphdef: Any
    other: Any  # nnx.State of the non-Param variables
    frozen_prefixes: Tuple[str, ...]
    config: Any  # the model's VideoLLMConfig (frame normalisation, dtypes)

    @property
    def trains_vision(self) -> bool:
        """True when some vision-side module (tower or connector) holds trainable params."""
        return not {"vision_tower", "connector"} <= set(self.frozen_prefixes)


@flax.struct.dataclass
class TrainState:
    params: Any  # {"trainable": nnx.State (f32), "frozen": nnx.State}
    opt_state: Any
    step: jax.Array  # int32 scalar: batches consumed (skipped ones included)
    rng: jax.Array


def trainable_filter(frozen: Sequence[str] = DEFAULT_FROZEN):
    """nnx filter: a Param whose top-level module name is not in `frozen`."""
    frozen = tuple(frozen)

    def is_trainable(path, value) -> bool:
        return isinstance(value, nnx.Param) and (not path or str(path[0]) not in frozen)

    return is_trainable


def split_model(model: nnx.Module, frozen: Sequence[str] = DEFAULT_FROZEN):
    """-> (ModelDef, trainable nnx.State, frozen nnx.State)."""
    graphdef, trainable, frozen_state, other = nnx.split(
        model, trainable_filter(frozen), nnx.Param, ...
    )
    if not jax.tree.leaves(trainable):
        raise ValueError(f"no trainable parameters: every Param is under one of {tuple(frozen)}")
    return ModelDef(graphdef, other, tuple(frozen), model.config), trainable, frozen_state


def merge_model(model_def: ModelDef, trainable, frozen) -> nnx.Module:
    """The model with the given params (trainable ones in f32; the model casts per layer)."""
    return nnx.merge(model_def.graphdef, trainable, frozen, model_def.other)


def make_schedule(cfg: Any) -> optax.Schedule:
    """Warmup (linear 0 -> lr over ceil(warmup_ratio·total_steps) steps), then the decay."""
    get = lambda k: cfg_get(cfg, k, OPTIMIZER_DEFAULTS[k])  # noqa: E731
    lr, kind = float(get("learning_rate")), str(get("schedule"))
    total, ratio = int(get("total_steps")), float(get("warmup_ratio"))
    if kind not in SCHEDULES:
        raise ValueError(f"schedule={kind!r}; expected one of {SCHEDULES}")
    if total < 1 or not 0.0 <= ratio < 1.0 or lr <= 0:
        raise ValueError(
            f"need total_steps >= 1, 0 <= warmup_ratio < 1, learning_rate > 0; got {total}, {ratio}, {lr}"
        )
    warmup = math.ceil(ratio * total)
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 0), total, end_value=0.0)
    after = (
        optax.linear_schedule(lr, 0.0, max(total - warmup, 1)) if kind == "linear"
        else optax.constant_schedule(lr)
    )
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """apply_if_finite(chain(clip_by_global_norm, adamw(schedule))) from the optimizer config."""
    get = lambda k: cfg_get(cfg, k, OPTIMIZER_DEFAULTS[k])  # noqa: E731
    parts = []
    max_norm = get("max_grad_norm")
    if max_norm is not None and float(max_norm) > 0:
        parts.append(optax.clip_by_global_norm(float(max_norm)))
    parts.append(optax.adamw(
        make_schedule(cfg), b1=float(get("b1")), b2=float(get("b2")), eps=float(get("eps")),
        weight_decay=float(get("weight_decay")),
    ))
    return optax.apply_if_finite(optax.chain(*parts), int(get("max_consecutive_skips")))


def skip_counts(opt_state) -> Tuple[jax.Array, jax.Array]:
    """(consecutive, total) non-finite updates skipped, from apply_if_finite's state."""
    return opt_state.notfinite_count, opt_state.total_notfinite


def init_state(model: nnx.Module, cfg: Any, rng, *, frozen: Sequence[str] | None = None):
    """-> (ModelDef, TrainState) at step 0; trainable params copied to float32.

    `cfg` is the optimizer section (see the module docstring); `frozen` defaults to
    cfg.frozen_modules if present, else DEFAULT_FROZEN.
    """
    if frozen is None:
        frozen = tuple(cfg_get(cfg, "frozen_modules", DEFAULT_FROZEN))
    model_def, trainable, frozen_state = split_model(model, frozen)
    trainable = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), trainable)
    if isinstance(rng, int):
        rng = jax.random.key(rng)
    opt_state = make_optimizer(cfg).init(trainable)
    state = TrainState(
        params={"trainable": trainable, "frozen": frozen_state}, opt_state=opt_state,
        step=jnp.zeros((), jnp.int32), rng=rng,
    )
    return model_def, state
