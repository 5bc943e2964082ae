"""Answer-letter extraction, pinned by name: every result row and report says which one ran.

    letter = extract("lmms-eval-2024", "The best answer is: B.", ("A", "B", "C", "D"), "videomme")  # "B"

"lmms-eval-2024": lmms-eval's Video-MME `extract_characters_regex` of the paper era: strip the
answer phrases (as that list is written, two pairs of its strings run together by a missing
comma: "The best option isThe correct option is", "Best answer:Best option:"), "" when more
than 10 words remain and no letter among them, else the first capital option letter anywhere
("Based on the video, B" -> "B"). A letter outside the item's options counts as unparsed.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Sequence

_PHRASES_2024 = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                 "The best option isThe correct option is", "Best answer:Best option:")


def lmms_eval_2024(text: str, letters: Sequence[str], task: str) -> str:
    s = text.strip()
    for phrase in _PHRASES_2024:
        s = s.replace(phrase, "")
    pattern = "[" + "".join(letters) + "]"
    if len(s.split()) > 10 and not re.search(pattern, s):
        return ""
    match = re.search(pattern, s)
    return match[0] if match else ""


EXTRACTORS: Dict[str, Callable[[str, Sequence[str], str], str]] = {"lmms-eval-2024": lmms_eval_2024}


def extract(name: str, text: str, letters: Sequence[str], task: str) -> str:
    """The option letter `text` answers under extractor `name` ("" when none)."""
    if name not in EXTRACTORS:
        raise ValueError(f"eval.benchmark.extractor={name!r}: expected one of {sorted(EXTRACTORS)}")
    return EXTRACTORS[name](text, tuple(letters), task)
