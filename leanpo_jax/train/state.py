"""Train state: trainable / frozen parameter split, f32 master params, the optax chain.

    model_def, state = init_state(model, cfg, rng)       # cfg: the optimizer section (below)
    model_def, state = init_state(model, cfg, rng, mesh=mesh)   # the same, laid out on a mesh
    model = merge_model(model_def, state.params["trainable"], state.params["frozen"])
    s_sh = state_shardings(state, mesh)                  # NamedShardings of the whole state

`init_state` (or `initial_state` on already split params, as the trainer does) is the one
builder of a step-0 state: one jit, which with `mesh` outputs every array (step and rng too)
as a global array in its `state_shardings` layout; its outputs never alias the model's
buffers, so the first donated train step cannot delete the model's arrays.

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
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from leanpo_jax.config_schema import Block, Field
from leanpo_jax.models.lora import LoRAParam, lora_of
from leanpo_jax.train.partitioning import DEFAULT_RULES, has_variables, like_params, param_shardings

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
    # Every Param (trainable and frozen) as a ShapeDtypeStruct in its nnx Variable, with its
    # logical-axis metadata: what `state_shardings(names_from=model_def)` reads to lay out
    # plain-array params. No arrays; not part of equality.
    abstract_params: Any = dataclasses.field(default=None, compare=False, repr=False)

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


def trainable_filter(frozen: Sequence[str] = DEFAULT_FROZEN, *, lora: bool = False):
    """nnx filter: a Param whose top-level module name is not in `frozen`; with `lora`, the
    adapters (lora.LoRAParam) alone, every base weight frozen."""
    frozen = tuple(frozen)

    def is_trainable(path, value) -> bool:
        if lora:
            return isinstance(value, LoRAParam)
        return isinstance(value, nnx.Param) and (not path or str(path[0]) not in frozen)

    return is_trainable


def split_model(model: nnx.Module, frozen: Sequence[str] = DEFAULT_FROZEN):
    """-> (ModelDef, trainable nnx.State, frozen nnx.State). A model with LoRA adapters
    (config.lora) trains its adapters only."""
    graphdef, trainable, frozen_state, other = nnx.split(
        model, trainable_filter(frozen, lora=lora_of(model.config) is not None), nnx.Param, ...
    )
    if not jax.tree.leaves(trainable):
        raise ValueError(f"no trainable parameters: every Param is under one of {tuple(frozen)}")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                            nnx.state(model, nnx.Param))
    model_def = ModelDef(graphdef, other, tuple(frozen), model.config, abstract_params=abstract)
    return model_def, trainable, frozen_state


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


def init_state(model: nnx.Module, cfg: Any, rng, *, frozen: Sequence[str] | None = None,
               mesh: jax.sharding.Mesh | None = None, rules=DEFAULT_RULES, frozen_dtype=None):
    """-> (ModelDef, TrainState) at step 0: `split_model` then `initial_state`.

    `cfg` is the optimizer section (see the module docstring); `frozen` defaults to
    cfg.frozen_modules if present, else DEFAULT_FROZEN; `rng` a key or an int seed; `mesh` /
    `rules` / `frozen_dtype` as in `initial_state`.
    """
    if frozen is None:
        frozen = tuple(cfg_get(cfg, "frozen_modules", DEFAULT_FROZEN))
    model_def, trainable, frozen_state = split_model(model, frozen)
    return model_def, initial_state(trainable, frozen_state, cfg, rng, mesh=mesh, rules=rules,
                                    frozen_dtype=frozen_dtype)


def initial_state(trainable, frozen, cfg: Any, rng, *, mesh: jax.sharding.Mesh | None = None,
                  rules=DEFAULT_RULES, frozen_dtype=None) -> TrainState:
    """The TrainState at step 0 from split params (`split_model`), built by one jit.

    Trainable params are copied to float32 (master weights), the optimizer state is
    `make_optimizer(cfg).init` of them, step 0, rng = `rng` (a key, or an int seed turned into
    `jax.random.key(seed)` inside the jit). With `mesh`, the jit's out_shardings are
    `state_shardings`: every array, step and rng included, is a global array on the mesh, also
    across processes (so an int seed is the multi-process choice: no host array to place).
    The outputs are fresh buffers: nothing aliases `trainable` / `frozen`. `frozen_dtype`: the
    frozen params' floating leaves are cast to it (a LoRA run's bf16 base), inside the jit.
    """
    seed = int(rng) if isinstance(rng, (int, np.integer)) else None

    def build(trainable, frozen, key):
        trainable = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), trainable)
        if frozen_dtype is not None:
            frozen = jax.tree.map(lambda x: x.astype(frozen_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                                  frozen)
        return TrainState(
            params={"trainable": trainable, "frozen": frozen},
            opt_state=make_optimizer(cfg).init(trainable), step=jnp.zeros((), jnp.int32),
            rng=jax.random.key(seed) if key is None else key)

    key = None if seed is not None else rng
    if mesh is None:
        # A jit, not eager ops: jnp.asarray of an f32 leaf would return the model's own buffer
        # (and the frozen params are the model's), which a donated train step then deletes.
        return jax.jit(build)(trainable, frozen, key)
    shardings = state_shardings(jax.eval_shape(build, trainable, frozen, key), mesh, rules)
    with jax.set_mesh(mesh):
        return jax.jit(build, out_shardings=shardings)(trainable, frozen, key)


# ----------------------------------------------------------------------------- state layout
def _names_reference(names_from: Any, mesh: jax.sharding.Mesh, rules):
    """param_shardings of whatever carries the logical names (see `state_shardings`)."""
    if isinstance(names_from, ModelDef):
        if names_from.abstract_params is None:
            raise ValueError("this ModelDef carries no abstract_params (build it with split_model)")
        names_from = names_from.abstract_params
    return param_shardings(names_from, mesh, rules)


def _params_shardings(tree: Any, mesh, rules, reference):
    if has_variables(tree) or reference is None:
        return param_shardings(tree, mesh, rules)
    # Plain arrays (names lost, e.g. a pure dict): take each leaf's sharding from the reference
    # parameter at the longest matching path suffix whose spec fits its shape.
    return like_params(tree, reference, mesh)


def state_shardings(state: TrainState, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES, *,
                    names_from: Any = None) -> TrainState:
    """TrainState-shaped NamedShardings for `state`.

    params["trainable"] and params["frozen"] by their logical names (`param_shardings`);
    opt_state like the trainable params (`like_params`: adam mu/nu follow them, counts and
    skip counters replicated); step and rng replicated. `state` may be concrete or abstract
    (`jax.eval_shape(lambda: init_state(...)[1])`). Usable as jit in/out_shardings for the
    state (each Variable gets one NamedSharding, a valid prefix).

    `init_state` keeps the nnx Variables (with their `out_sharding` names) in both params and
    the Adam moments, so `names_from` is not needed for it. Only when the param leaves are
    plain arrays (names dropped, e.g. `nnx.to_pure_dict` trees) pass `names_from`: an nnx
    Module (abstract or concrete), a state of Variables, or a `ModelDef` (its
    `abstract_params`); leaves are then matched to its params by path. Without it, plain-array
    params are replicated.
    """
    reference = None if names_from is None else _names_reference(names_from, mesh, rules)
    params = state.params
    trainable = _params_shardings(params["trainable"], mesh, rules, reference)
    frozen = _params_shardings(params["frozen"], mesh, rules, reference)
    replicated = NamedSharding(mesh, P())
    return state.replace(
        params={"trainable": trainable, "frozen": frozen},
        opt_state=like_params(state.opt_state, trainable, mesh),
        step=replicated, rng=replicated,
    )


def shard_state(state: TrainState, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES, *,
                names_from: Any = None) -> TrainState:
    """The concrete `state` moved onto `mesh` with `state_shardings` (jax.device_put).

    The input arrays are not donated; with jax.device_put a leaf already in place is reused.
    """
    return jax.device_put(state, state_shardings(state, mesh, rules, names_from=names_from))
