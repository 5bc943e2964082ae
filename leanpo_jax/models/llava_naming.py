"""Tensor namings of LLaVA-style checkpoints and their renaming to the llava-hf hub names.

  llava-hf      language_model.model.*, language_model.lm_head.weight, multi_modal_projector.*,
                image_newline, vision_tower.vision_model.* (hub) or vision_tower.* (the form
                transformers 5 save_pretrained writes)
  transformers  model.language_model.*, model.vision_tower.*, model.multi_modal_projector.*,
                model.image_newline, lm_head.weight (transformers 5's in-memory names)
  lmms-lab      model.{embed_tokens,layers,norm}.*, model.mm_projector.{0,2}.*,
                model.vision_tower.vision_tower.vision_model.*, model.image_newline, lm_head.*
  causal-lm     model.* and lm_head.weight only (Qwen2 / Llama): a text-only model
Every family whose checkpoints follow these layouts (LLaVA-OneVision, LLaVA-NeXT-Video) renames
with `canonical_names(keys, detect_naming(keys))`.
"""

from __future__ import annotations

import re

LM_PREFIX, LM_HEAD = "language_model.model.", "language_model.lm_head.weight"
VISION_PREFIX = "vision_tower.vision_model."
_LM, _VT = LM_PREFIX, VISION_PREFIX

# Source naming -> ordered (pattern, replacement) rules to the canonical llava-hf names; the
# first rule that matches a key renames it, keys no rule matches keep their name.
_RULES = {
    "llava-hf": [(r"^vision_tower\.(?!vision_model\.)", _VT)],
    "transformers": [
        (r"^model\.language_model\.", _LM), (r"^lm_head\.", "language_model.lm_head."),
        (r"^model\.vision_tower\.(vision_model\.)?", _VT),
        (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
        (r"^model\.image_newline$", "image_newline")],
    "lmms-lab": [
        (r"^model\.vision_tower\.vision_tower\.vision_model\.", _VT),
        (r"^model\.mm_projector\.0\.", "multi_modal_projector.linear_1."),
        (r"^model\.mm_projector\.2\.", "multi_modal_projector.linear_2."),
        (r"^model\.image_newline$", "image_newline"),
        (r"^model\.(?!vision_tower\.|mm_projector\.)", _LM),
        (r"^lm_head\.", "language_model.lm_head.")],
}
_RULES["causal-lm"] = _RULES["lmms-lab"]


# ------------------------------------------------------------------------------------- naming
def detect_naming(keys, where: str = "checkpoint") -> str:
    """Which of the namings above a set of tensor keys uses (see the module docstring)."""
    keys = list(keys)

    def has(*prefixes):
        return any(k.startswith(prefixes) for k in keys)

    if has("language_model.model.", "language_model.lm_head."):
        return "llava-hf"
    if has("model.language_model."):
        return "transformers"
    if has("model.mm_projector.", "model.vision_tower.vision_tower.", "model.image_newline"):
        return "lmms-lab"
    if has("model.embed_tokens.", "model.layers.", "model.norm."):
        return "causal-lm"
    raise ValueError(f"{where}: cannot tell the naming from its tensor names (e.g. "
                     f"{sorted(keys)[:5]}); expected llava-hf (language_model.model.*), "
                     "transformers (model.language_model.*), lmms-lab or causal-LM (model.*)")


def rename_keys(keys, rules, where: str = "checkpoint", post=None) -> dict:
    """{canonical name: name in the file}: the first (pattern, replacement) of `rules` that
    matches a key renames it, then `post(name)` if given; two keys landing on one name is an
    error naming both."""
    out = {}
    for key in keys:
        name = key
        for pattern, repl in rules:
            name, hits = re.subn(pattern, repl, key, count=1)
            if hits:
                break
        if post is not None:
            name = post(name)
        if name in out:
            raise ValueError(f"{where}: {key!r} and {out[name]!r} both name tensor {name!r}")
        out[name] = key
    return out


def _strip_language_model(name: str) -> str:
    return re.sub(r"^language_model\.(?=model\.|lm_head\.)", "", name)


def canonical_names(keys, naming: str, text_only: bool, where: str = "checkpoint") -> dict:
    """{canonical name: name in the file} for every key (text-only: plain causal-LM names)."""
    return rename_keys(keys, _RULES[naming], where, _strip_language_model if text_only else None)


# ------------------------------------------------------------------ tensors beside the params
VISION_LAYER = re.compile(r"^vision_tower\.vision_model\.encoder\.layers\.(\d+)\.(layer_norm[12]"
                          r"|self_attn\.(q|k|v|out)_proj|mlp\.fc[12])\.(weight|bias)$")
TENSORS_PER_VISION_LAYER = 16
# Buffers some exports carry (position ids, rotary inverse frequencies): kept, never used.
BUFFER = re.compile(r"(^|\.)(position_ids|rotary_emb\.inv_freq)$")


def unused_vision_layer(name: str, used: int) -> bool:
    """True for a canonical tensor of a ViT layer at index >= `used` (past the feature layer)."""
    m = VISION_LAYER.match(name)
    return bool(m) and int(m.group(1)) >= used


def extra_vision_layers(names, used: int) -> int:
    """How many complete ViT layers used, used+1, ... `names` hold (0 if any is partial or missing)."""
    counts: dict = {}
    for n in names:
        m = VISION_LAYER.match(n)
        if m:
            counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
    complete = set(counts.values()) <= {TENSORS_PER_VISION_LAYER}
    contiguous = sorted(counts) == list(range(used, used + len(counts)))
    return len(counts) if complete and contiguous else 0


def mismatch_error(path: str, naming: str, missing: list, unknown: list, what: str, fix: str) -> ValueError:
    """The error of a checkpoint whose tensors do not match the config, naming every one."""
    return ValueError(
        f"{path} ({naming} naming) does not match the {what} config: "
        + (f"{len(missing)} tensors missing (canonical names): {missing}; " if missing else "")
        + (f"{len(unknown)} unknown tensors: {unknown}; " if unknown else "") + fix)
