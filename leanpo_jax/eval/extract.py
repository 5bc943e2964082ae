"""Answer-letter extraction, pinned by name: every result row and report says which one ran.

    letter = extract("lmms-eval-2024", "The best answer is: B.", ("A", "B", "C", "D"), "videomme")  # "B"

"lmms-eval-2024", per task as lmms-eval's task files of the paper era parse:
- videomme, mcq: Video-MME's `extract_characters_regex`: strip the answer phrases (as that list
  is written, two pairs of its strings run together by a missing comma: "The best option isThe
  correct option is", "Best answer:Best option:"), "" when more than 10 words remain and no
  letter among them, else the first capital option letter anywhere ("Based on the video, B" ->
  "B").
- mlvu: the prompt ends in "Best option: (", so an answer "B) ..." names its letter before the
  first ")"; without a ")" the Video-MME rule.
- longvideobench: the same rule with the phrase list written correctly and letters A-E; ""
  becomes a seeded random letter (scoring.fallback_letter), as LongVideoBench's authors assign.
- nextqa: the MMMU-style parser: "(X)" > "X " > "X." candidates, the option text itself in an
  answer of more than 5 words, the last-placed candidate when several; none -> a seeded random
  letter.
A letter outside the item's options counts as unparsed.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Sequence

_PHRASES_2024 = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                 "The best option isThe correct option is", "Best answer:Best option:")


_PHRASES_LVB = ("The best answer is", "The correct answer is", "The answer is", "The answer", "The best option is",
                "The correct option is", "Best answer:", "Best option:")


def _first_letter(text: str, letters: Sequence[str], phrases) -> str:
    s = text.strip()
    for phrase in phrases:
        s = s.replace(phrase, "")
    pattern = "[" + "".join(letters) + "]"
    if len(s.split()) > 10 and not re.search(pattern, s):
        return ""
    match = re.search(pattern, s)
    return match[0] if match else ""


def _mmmu_style(text: str, letters: Sequence[str], options: Sequence[str]) -> str:
    response = text
    for ch in ",.!?;:'":
        response = response.strip(ch)
    response = " " + response + " "
    found = [x for x in letters if f"({x})" in response]
    bracketed, by_letter = bool(found), True
    if not found:
        found = [x for x in letters if f"{x} " in response]
    if not found:
        found = [x for x in letters if f"{x}." in response]
    if not found and len(response.split()) > 5 and options:
        found = [x for x, o in zip(letters, options) if o.lower() in response.lower()]
        by_letter = False
    if len(found) <= 1:
        return found[0] if found else ""
    if not by_letter:
        places = [response.lower().rfind(o.lower()) for x, o in zip(letters, options) if x in found]
    else:
        places = [response.rfind(f"({x})" if bracketed else f" {x} ") for x in found]
    return found[max(range(len(found)), key=lambda i: (places[i], -i))]


def lmms_eval_2024(text: str, letters: Sequence[str], task: str, options: Sequence[str] = ()) -> str:
    if task == "mlvu" and ")" in text:
        before = text[:text.index(")")].strip()[-1:]
        if before in letters:
            return before
    if task == "longvideobench":
        return _first_letter(text, tuple(x for x in "ABCDE" if x in letters) or letters, _PHRASES_LVB)
    if task == "nextqa":
        return _mmmu_style(text, letters, options)
    return _first_letter(text, letters, _PHRASES_2024)


EXTRACTORS: Dict[str, Callable[..., str]] = {"lmms-eval-2024": lmms_eval_2024}


def extract(name: str, text: str, letters: Sequence[str], task: str, options: Sequence[str] = ()) -> str:
    """The option letter `text` answers under extractor `name` ("" when none); `options`: the
    option texts (NExT-QA's parser matches them in long answers)."""
    if name not in EXTRACTORS:
        raise ValueError(f"eval.benchmark.extractor={name!r}: expected one of {sorted(EXTRACTORS)}")
    return EXTRACTORS[name](text, tuple(letters), task, tuple(options))
