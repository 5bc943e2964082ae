"""eval.extract: input -> letter tables for both pinned lmms-eval versions and their differences.

Expected letters follow from reading the lmms-eval parsers (videomme/mlvu/longvideobench/nextqa
utils.py before 9ca4445, and _task_utils/mcq_extract.py at 7a69a9a), worked by hand.
"""

import pytest

from leanpo_jax.eval.extract import EXTRACTORS, extract

ABCD = ("A", "B", "C", "D")
OLD, NEW = "lmms-eval-2024", "lmms-eval-2026"

# (text, 2024, 2026) for Video-MME
VIDEOMME = [
    ("C", "C", "C"),
    ("(D)", "D", "D"),
    ("B.", "B", "B"),
    ("The answer is (C).", "C", "C"),
    ("The best answer is: A", "A", "A"),
    ("Based on the video, B", "B", "B"),                       # 2024: the B of "Based" is first
    ("Based on the video, the answer is C.", "B", "C"),       # the known difference
    ("Best answer: C", "B", "C"),                              # fused prefixes never strip "Best answer:"
    ("Option C is wrong; the best answer is D.", "C", "D"),
    ("I think it is D because A person runs", "D", "A"),       # 2026: "A " at the start wins
    ("The answer is C. Because in the video", "C", "B"),       # 2026: last capital letter after the phrase
    ("答案是C", "C", "C"),
    ("E", "", ""),                                             # not a Video-MME letter
    ("d", "", ""),                                             # lower case is never a letter
    ("the man is walking in the park with his dog and the cat today", "", ""),
    ("", "", ""),
]


@pytest.mark.parametrize("text,old,new", VIDEOMME)
def test_videomme_table(text, old, new):
    assert extract(OLD, text, ABCD, "videomme") == old
    assert extract(NEW, text, ABCD, "videomme") == new


# MLVU's post prompt ends with "Best option: (", so answers look like "A) ...".
MLVU = [
    ("A) Yellow", "A", "A"),
    ("B", "B", "B"),                   # 2024: no ")" -> the whole text, here a letter
    ("B.", "", "B"),                   # 2024: the whole text "B." is no letter
    ("The answer is (C)", "C", "C"),   # 2024: the character before the first ")"
    (") B", "", "B"),                  # 2024: ")" first -> empty slice
    ("Red (B)", "B", "B"),
    ("Best option: (D)", "D", "D"),
]


@pytest.mark.parametrize("text,old,new", MLVU)
def test_mlvu_table(text, old, new):
    assert extract(OLD, text, ABCD, "mlvu") == old
    assert extract(NEW, text, ABCD, "mlvu") == new


LVB = [
    ("D", "D"),
    ("The best option is B", "B"),      # all eight prefixes are stripped here
    ("Best answer: C", "C"),
    ("E", "E"),                          # [ABCDE] even for four options: kept, scored wrong
    ("none of these", ""),               # -> scoring.fallback_letter
]


@pytest.mark.parametrize("text,want", LVB)
def test_longvideobench_same_under_both(text, want):
    assert extract(OLD, text, ABCD, "longvideobench") == want
    assert extract(NEW, text, ABCD, "longvideobench") == want


NQA_OPTS = ("roll the handle", "tap their feet", "strum the string", "hit with sticks", "pat with hand")
NQA = [
    ("(B)", "B"),
    ("A. roll the handle", "A"),
    ("C is right, not A", "A"),                      # several "X " candidates: the last one
    ("they strum the string of the guitar", "C"),    # > 5 words and an option's text
    ("they strum", ""),                              # -> fallback
]


@pytest.mark.parametrize("text,want", NQA)
def test_nextqa_same_under_both(text, want):
    for name in EXTRACTORS:
        assert extract(name, text, tuple("ABCDE"), "nextqa", NQA_OPTS) == want


def test_mcq_uses_item_letters():
    five = tuple("ABCDE")
    assert extract(OLD, "E", five, "mcq") == "E"
    assert extract(NEW, "The answer is E.", five, "mcq") == "E"
    assert extract(NEW, "E", ("A", "B"), "mcq") == ""
    assert extract(OLD, "Based on the video, the answer is C.", ABCD, "mcq") == "B"


def test_unknown_extractor_and_non_text():
    with pytest.raises(KeyError, match="lmms-eval-2024"):
        extract("newest", "A", ABCD, "videomme")
    assert extract(NEW, None, ABCD, "videomme") == ""
