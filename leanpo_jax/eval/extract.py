"""Answer-letter extraction, pinned to two lmms-eval snapshots: extract(name, text, letters, task).

Returns the letter lmms-eval would compare with the gold one, or "" when nothing parsable (a
value lmms-eval would compare but that is no option letter is also ""; it can never be correct).

"lmms-eval-2024": the per-task parsers before commit 9ca4445 (2026-04-11), read at its parent
d0c1eae (same day); Video-MME's is unchanged since at least 80391ce (2024-12-30), MLVU's ")"
rule dates from e5f70443 (2025-03-16; before it MLVU used the Video-MME rule):
  videomme  strip the answer prefixes (the source list is six strings, two of them fused by a
            missing comma: "The best option isThe correct option is", "Best answer:Best option:",
            so "The best option is" and "Best answer:" alone are NOT stripped); more than 10 words
            and no [ABCD] -> ""; else the first [ABCD] anywhere ("Based on the video, C" -> "B").
  mlvu      the character before the first ")"; with no ")" the whole stripped text.
  longvideobench  the Video-MME rule with the eight prefixes spelled out and [ABCDE]; failure ->
            random choice (here: "" and scoring.fallback_letter, seeded per item).
  nextqa    MMMU-style: "(X)" > "X " > "X." candidates, then option text when > 5 words; several
            -> the last one; none -> random choice (here: "" + fallback_letter).
  mcq       (ours) the Video-MME rule over the item's own letters.
"lmms-eval-2026": commit 9ca4445 (2026-04-11) switched Video-MME and MLVU to the shared
`_task_utils/mcq_extract.extract_mcq_answer` with choices A-D, and 7a69a9a (same day) added
Korean/Chinese/Japanese answer phrases; that is the state at 75571cf (2026-08-06, newest read).
Candidates by format, best first: a standalone letter at the start, at the end, after an answer
phrase, "(X)", "X.", "X:", "X)", "X "; the last occurrence wins within a format; with no
candidate, the last bare letter anywhere. LongVideoBench and NExT-QA kept their own parsers, so
they behave as under 2024. mcq uses this rule over the item's letters.
Known differences (Video-MME): "Based on the video, the answer is C." -> "B" (2024: first
capital A-D, here the B of "Based") vs "C" (2026: letter at the end); "Best answer: C" -> "B" vs
"C" (the fused prefix list never strips "Best answer:"); "I think D because A person runs" -> "D"
vs "A"; and a 2026 quirk: "The answer is C. Because ..." -> "C" vs "B" (after the phrase, the
last capital choice letter wins, here the B of "Because"). Plain "B", "(B)", "B." agree.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

# Video-MME / MLVU(2024-12) prefix list, fused strings kept on purpose (see module docstring).
_VIDEOMME_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                      "The best option isThe correct option is", "Best answer:Best option:")
_LVB_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                 "The best option is", "The correct option is", "Best answer:", "Best option:")


def _prefix_then_first_letter(text: str, prefixes: Sequence[str], alphabet: str) -> str:
    s = text.strip()
    for p in prefixes:  # sequential replace, as in the source: order matters
        s = s.replace(p, "")
    cls = re.compile(f"[{re.escape(alphabet)}]")
    m = cls.search(s)
    if len(s.split()) > 10 and m is None:
        return ""
    return m.group(0) if m else ""


def _mlvu_paren(text: str) -> str:
    s = text.strip()
    if ")" in s:
        i = s.index(")")
        return s[i - 1:i]  # i == 0 gives "" (an empty slice), as in the source
    return s


def _nextqa_mmmu(text: str, letters: Sequence[str], options: Sequence[str]) -> str:
    r = text
    for ch in (",", ".", "!", "?", ";", ":", "'"):  # no '"' in this list (unlike 2026's)
        r = r.strip(ch)
    r = f" {r} "
    cands = [c for c in letters if f"({c})" in r]
    brackets = bool(cands)
    if not cands:
        cands = [c for c in letters if f"{c} " in r]
    if not cands:
        cands = [c for c in letters if f"{c}." in r]
    by_text = False
    if not cands and len(r.split()) > 5 and options:
        cands = [c for c, o in zip(letters, options) if o.lower() in r.lower()]
        by_text = bool(cands)
    if not cands:
        return ""
    if len(cands) == 1:
        return cands[0]
    if by_text:
        pos = [r.lower().rfind(options[list(letters).index(c)].lower()) for c in cands]
    elif brackets:
        pos = [r.rfind(f"({c})") for c in cands]
    else:
        pos = [r.rfind(f" {c} ") for c in cands]  # "X." candidates score -1 here, as upstream
    return cands[max(range(len(cands)), key=lambda k: (pos[k], -k))]  # argmax: first of ties


_PHRASES = ("the answer is", "answer is", "the correct answer is", "correct answer is",
            "the best answer is", "best answer is", "the correct option is", "correct option is",
            "the best option is", "best option is", "the choice is", "choice is",
            "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
            "my answer is", "my choice is",
            "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは")  # added by 7a69a9a
_RANK = {"start": 10, "end": 9, "phrase": 7, "paren": 6, "period": 5, "colon": 4,
         "right_paren": 3, "space": 2, "bare": 0}


def _ranked(text: str, choices: Sequence[str]) -> str:
    if not text or not text.strip():
        return ""
    t = text.strip()
    for ch in (",", ".", "!", "?", ";", ":", "'", '"'):  # one after another, each both ends
        t = t.strip(ch)
    t = f" {t} "
    found = []  # (rank, position, letter)
    for fmt, pattern in (("paren", "({})"), ("period", "{}."), ("colon", "{}:"),
                         ("right_paren", "{})"), ("space", "{} ")):
        for c in choices:
            at = t.rfind(pattern.format(c))
            if at >= 0:
                found.append((_RANK[fmt], at, c))
    low = t.lower()
    for phrase in _PHRASES:
        at = low.find(phrase)  # first occurrence of the phrase, first letter after it
        if at >= 0:
            for c in choices:
                pos = t.find(c, at + len(phrase))
                if pos >= 0:
                    found.append((_RANK["phrase"], pos, c))
    core = t.strip()
    for c in choices:
        if core.startswith(c) and (len(core) == 1 or not core[1].isalpha()):
            found.append((_RANK["start"], 0, c))
        if core.endswith(c) and (len(core) == 1 or not core[-2].isalpha()):
            found.append((_RANK["end"], len(t) - 1, c))
    if not found:
        found = [(_RANK["bare"], t.rfind(c), c) for c in choices if c in t]
    if not found:
        return ""
    # Best rank, then latest position; a stable sort keeps the first-found on a full tie.
    return sorted(found, key=lambda f: (f[0], f[1]), reverse=True)[0][2]


def _only_letters(pred: str, letters: Sequence[str]) -> str:
    return pred if pred in letters else ""


def _v2024(text: str, letters: Sequence[str], task: str, options: Sequence[str]) -> str:
    if task == "videomme":
        return _only_letters(_prefix_then_first_letter(text, _VIDEOMME_PREFIXES, "ABCD"), letters)
    if task == "mlvu":
        return _only_letters(_mlvu_paren(text), letters)
    if task == "longvideobench":
        # [ABCDE] even with four options: an "E" is kept (and is wrong), not sent to the fallback.
        pred = _prefix_then_first_letter(text, _LVB_PREFIXES, "ABCDE")
        return pred
    if task == "nextqa":
        return _nextqa_mmmu(text, letters, options)
    return _only_letters(_prefix_then_first_letter(text, _VIDEOMME_PREFIXES, "".join(letters)), letters)


def _v2026(text: str, letters: Sequence[str], task: str, options: Sequence[str]) -> str:
    if task in ("videomme", "mlvu"):
        return _only_letters(_ranked(text, "ABCD"), letters)
    if task in ("longvideobench", "nextqa"):
        return _v2024(text, letters, task, options)  # not switched upstream
    return _ranked(text, tuple(letters))


EXTRACTORS = {"lmms-eval-2024": _v2024, "lmms-eval-2026": _v2026}


def extract(name: str, text: str, letters: Sequence[str], task: str,
            options: Optional[Sequence[str]] = None) -> str:
    """The answer letter in `text` under extractor `name` for `task`, or "" (nothing parsable).

    `options` (the option texts) is only used by NExT-QA, which also matches answer text.
    """
    if name not in EXTRACTORS:
        raise KeyError(f"unknown extractor {name!r}; known: {sorted(EXTRACTORS)}")
    return EXTRACTORS[name](text if isinstance(text, str) else "", tuple(letters), task,
                            tuple(options or ()))
