"""Declarative config blocks: each key's default, type, rule and one-line doc, declared once.

    LOSS = Block("the objective", beta=Field(2.0, "β: reward scale", rule="> 0"), ...)
    config.loss = LOSS.to_config_dict()       # the ml_collections defaults (--config.loss.beta=1.5)
    LOSS.validate(config.loss, "loss.")       # "config loss.beta=-1.0: expected a number > 0"
    check_known(config, SCHEMA)               # "unknown config key loss.bta (did you mean loss.beta?)"

Types follow the default: bool, int (a bool is not an int), float (ints accepted; finite), str,
tuples of ints / floats / strs (`type=` where the default cannot tell: an empty tuple). `rule`:
">= 1", "> 0", "in [0, 1)", "in (0, 1]", a bare number, alternatives joined by "or"; on a tuple
it holds for each element. `check=` is a predicate on the whole value instead, `rule` then its
text as printed; `choices=` lists the allowed values. Rules across keys are plain functions
beside the blocks (train/config.py, data/config.py), their messages naming every key involved.
`cli_flags_parser(prog)` makes a CLI refuse `--config.loss.bta=2` with the same message (with
lock_config=True, ml_collections raises a KeyError / AttributeError traceback instead).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import numbers
import operator
import re
import sys
from typing import Any, Callable, Dict, List, Optional

import ml_collections
from absl import app, flags

_COMPARE = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_INTERVAL = re.compile(r"in ([\[(])([^,]+),([^\])]+)([\])])")
_BOUND = re.compile(r"(>=|<=|>|<)(.+)")
_NOUNS = {bool: "a bool", int: "an int", float: "a number", str: "a string"}
_PLURALS = {int: "ints", float: "numbers", str: "strings", bool: "bools"}


def _parse_rule(rule: str) -> Callable[[Any], bool]:
    """">= 1 or -1" -> a predicate on one number (see the module docstring)."""
    tests = []
    for part in (p.strip() for p in rule.split(" or ")):
        interval, bound = _INTERVAL.fullmatch(part), _BOUND.fullmatch(part)
        if interval:
            open_lo, lo, hi, open_hi = interval.groups()
            lo_ok = operator.ge if open_lo == "[" else operator.gt
            hi_ok = operator.le if open_hi == "]" else operator.lt
            tests.append(lambda v, lo=float(lo), hi=float(hi), a=lo_ok, b=hi_ok: a(v, lo) and b(v, hi))
        elif bound:
            op, limit = bound.groups()
            tests.append(lambda v, op=_COMPARE[op], limit=float(limit): op(v, limit))
        else:
            tests.append(lambda v, x=float(part): v == x)
    return lambda v: any(test(v) for test in tests)


def _type_of(default: Any):
    for kind in (bool, int, float, str):  # bool first: it is an int to Python
        if isinstance(default, kind):
            return kind
    kinds = {_type_of(v) for v in default} if isinstance(default, tuple) and default else set()
    if kinds == {int} or kinds == {int, float}:
        return (float,) if float in kinds else (int,)
    if len(kinds) == 1:
        return (kinds.pop(),)
    raise TypeError(f"cannot infer a config type from the default {default!r}; pass type=")


def _is(value: Any, kind) -> bool:
    if isinstance(kind, tuple):
        return isinstance(value, tuple) and all(_is(v, kind[0]) for v in value)
    if kind in (int, float):  # a bool is not a number here; floats are finite
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return real and (isinstance(value, numbers.Integral) if kind is int else math.isfinite(value))
    return isinstance(value, kind)


def _coerce(value: Any, kind) -> Any:
    if isinstance(kind, tuple):
        return tuple(_coerce(v, kind[0]) for v in value)
    return kind(value)


@dataclasses.dataclass(frozen=True)
class Field:
    """One config key: its default, a one-line doc and what values it accepts."""

    default: Any
    doc: str
    rule: str = ""
    choices: Optional[tuple] = None
    check: Optional[Callable[[Any], bool]] = None
    type: Any = None  # bool | int | float | str | (element,) for a tuple; None: from the default
    _test: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.doc or "\n" in self.doc:
            raise ValueError(f"a config Field needs a one-line doc (default {self.default!r})")
        if self.choices is None and self.type is None:
            object.__setattr__(self, "type", _type_of(self.default))
        test = self.check or (_parse_rule(self.rule) if self.rule else None)
        object.__setattr__(self, "_test", test)

    def expected(self) -> str:
        """The accepted values in words, as error messages print them."""
        if self.choices is not None:
            text = f"one of {self.choices}"
        elif self.check is not None:
            text = self.rule
        elif isinstance(self.type, tuple):
            text = f"a tuple of {_PLURALS[self.type[0]]}" + (f", each {self.rule}" if self.rule else "")
        else:
            text = f"{_NOUNS[self.type]} {self.rule}".strip()
        return text

    def parse(self, value: Any, path: str, intro: str = "config ") -> Any:
        """`value` as a plain Python value (ints, floats, tuples); ValueError naming `path`."""
        value = tuple(value) if isinstance(value, list) else value
        if self.choices is not None:
            ok = any(value == c and type(value) is type(c) for c in self.choices)
        elif not _is(value, self.type):
            ok = False
        elif self._test is None:
            ok = True
        elif isinstance(self.type, tuple) and self.check is None:
            ok = all(self._test(v) for v in value)
        else:
            ok = bool(self._test(value))
        if not ok:
            raise ValueError(f"{intro}{path}={value!r}: expected {self.expected()}")
        return value if self.choices is not None else _coerce(value, self.type)


class Block:
    """Named Fields and sub-Blocks, in order. `doc` and `optional` are not key names: an
    optional block may be absent from a config and is left out of the defaults."""

    def __init__(self, doc: str = "", *, optional: bool = False, **entries):
        self.doc, self.optional, self.entries = doc, optional, dict(entries)

    def defaults(self) -> Dict[str, Any]:
        """Nested plain dict of every default (optional sub-blocks left out)."""
        return {key: entry.default if isinstance(entry, Field) else entry.defaults()
                for key, entry in self.entries.items()
                if isinstance(entry, Field) or not entry.optional}

    def to_config_dict(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(self.defaults())

    def paths(self, prefix: str = "") -> List[str]:
        """Dotted paths of every key, optional blocks included."""
        out = []
        for key, entry in self.entries.items():
            out += [prefix + key] if isinstance(entry, Field) else entry.paths(f"{prefix}{key}.")
        return out

    def validate(self, config, prefix: str = "", *, intro: str = "config ") -> Dict[str, Any]:
        """Checks unknown keys, then every key's presence, type and rule; returns the values as
        plain Python (nested dicts). ValueError "{intro}{prefix}KEY=VALUE: expected RULE"."""
        check_known(config, self, prefix)
        return self._values(config, prefix, intro)

    def _values(self, config, prefix: str, intro: str) -> Dict[str, Any]:
        out = {}
        for key, entry in self.entries.items():
            path = prefix + key
            if key not in config:
                if isinstance(entry, Block) and entry.optional:
                    continue
                rule = entry.expected() if isinstance(entry, Field) else f"a block ({entry.doc})"
                raise ValueError(f"{intro}{path} is missing: expected {rule}")
            value = config[key]
            if isinstance(entry, Field):
                out[key] = entry.parse(value, path, intro)
            elif not _is_mapping(value):
                raise ValueError(f"{intro}{path}={value!r}: expected a block of keys "
                                 f"({', '.join(entry.entries)})")
            else:
                out[key] = entry._values(value, path + ".", intro)
        return out


def default_of(fn: Callable, name: str) -> Any:
    """The default of `fn`'s keyword `name`: a config default read from the function it feeds."""
    return inspect.signature(fn).parameters[name].default


def _is_mapping(value) -> bool:
    return hasattr(value, "keys") and hasattr(value, "__getitem__")


def unknown_keys(config, schema: Block, prefix: str = "") -> List[str]:
    """Dotted paths of the keys of `config` (a ConfigDict or dict) that `schema` does not declare."""
    found = []
    for key in config.keys():
        entry = schema.entries.get(key)
        if entry is None:
            found.append(f"{prefix}{key}")
        elif isinstance(entry, Block) and _is_mapping(config[key]):
            found += unknown_keys(config[key], entry, f"{prefix}{key}.")
    return found


def nearest_key(path: str, known: List[str]) -> Optional[str]:
    """The known dotted path closest to `path` (difflib), or None when none is close."""
    match = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_key_message(path: str, known: List[str]) -> str:
    near = nearest_key(path, known)
    if near is not None:
        return f"unknown config key {path} (did you mean {near}?)"
    parent = path.rpartition(".")[0]
    start = len(parent) + 1 if parent else 0
    names = sorted({k[start:].split(".")[0] for k in known if k.startswith(parent + "." if parent else "")})
    where = f"under {parent}" if parent else "at the top"
    return f"unknown config key {path} (known keys {where}: {', '.join(names)})"


def check_known(config, schema: Block, prefix: str = "") -> None:
    """Raises ValueError naming each unknown key and the nearest known one."""
    unknown = unknown_keys(config, schema, prefix)
    if unknown:
        known = schema.paths(prefix)
        raise ValueError("; ".join(unknown_key_message(path, known) for path in unknown))


def _leaf_paths(config, prefix: str = "") -> List[str]:
    out = []
    for key in config.keys():
        value = config[key]
        out += _leaf_paths(value, f"{prefix}{key}.") if _is_mapping(value) else [f"{prefix}{key}"]
    return out


def _unknown_override(argv: List[str], flag: str) -> Optional[str]:
    """The nearest-key message for the first `--FLAG.PATH` override that the config file named
    by `--FLAG` lacks; None when there is none (another error)."""
    path = next((a.split("=", 1)[1] for a in argv if re.match(rf"--?{flag}=", a)), None)
    if path is None and f"--{flag}" in argv[:-1]:
        path = argv[argv.index(f"--{flag}") + 1]
    if path is None:
        return None
    known = _leaf_paths(flags.FLAGS[flag].parser.parse(path))  # the config file, loaded again
    for match in (re.match(rf"--?(?:no)?{flag}\.([^=]+)", arg) for arg in argv):
        key = match and match.group(1)
        if key and key not in known and not any(k.startswith(key + ".") for k in known):
            return unknown_key_message(key, known)
    return None


def cli_flags_parser(prog: str, flag: str = "config", *,
                     flags_module: str = "__main__") -> Callable[[List[str]], List[str]]:
    """`app.run(main, flags_parser=cli_flags_parser("leanpo-train", flags_module=__name__))`:
    absl's parsing, with an override of a key the config lacks refused as "PROG: error:
    unknown config key ...". `flags_module` is the module defining the CLI's flags: absl's
    --help lists the flags of the program file (sys.argv[0]) only, which for a console script
    is the generated launcher, so they are listed under it as well (and the launcher, which
    has no docstring, shows `flags_module`'s as the usage text)."""

    def parse(argv: List[str]) -> List[str]:
        if flags_module != "__main__":
            launcher = sys.modules["__main__"]
            if not getattr(launcher, "__doc__", None):  # absl's usage text is __main__'s doc
                launcher.__doc__ = sys.modules[flags_module].__doc__
            shown = {id(f) for f in flags.FLAGS.get_flags_for_module(sys.argv[0])}
            for defined in flags.FLAGS.get_flags_for_module(flags_module):
                if id(defined) not in shown:
                    flags.FLAGS.register_flag_by_module(sys.argv[0], defined)
        try:
            return app.parse_flags_with_usage(argv)
        except (KeyError, AttributeError):
            message = _unknown_override(argv, flag)
            if message is None:
                raise
            print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
            sys.exit(1)

    return parse


# The mesh and distributed blocks live here, not in train/config.py, so that the module that
# builds meshes (train/mesh.py) can read them without importing the trainer's config.
MESH = Block(
    "device mesh: data * fsdp is the data-parallel size; the product equals the device count",
    data=Field(1, "Data-parallel axis (params replicated); -1 = all remaining devices (one -1 at most)",
               rule=">= 1 or -1"),
    fsdp=Field(-1, "FSDP axis (params and optimizer state sharded); -1 = all remaining devices",
               rule=">= 1 or -1"),
    tensor=Field(1, "Tensor-parallel axis (heads, MLP, vocab); -1 = all remaining devices", rule=">= 1 or -1"),
)
DISTRIBUTED = Block(
    "multi-host start-up (jax.distributed.initialize)",
    coordinator_address=Field("", '"host:port" of process 0; "" = single process (no-op)'),
    num_processes=Field(1, "Processes in the run (used with coordinator_address)", rule=">= 1"),
    process_id=Field(0, "This process's index (used with coordinator_address)", rule=">= 0"),
    auto=Field(False, "Call jax.distributed.initialize() with no arguments (TPU pods, SLURM: JAX finds them)"),
)
