"""ChatTokenizer with SentencePiece-style (Llama) tokenizers and the vicuna_v1 template, pinned
against transformers' own tokenisation of the full rendered string, offline.

The tokenizers are small Llama look-alikes trained here: BPE with byte fallback, <unk> 0, <s> 1,
</s> 2, <0x00>..<0xFF>, then learnt pieces; <video> / <image> special added tokens; a
TemplateProcessing post-processor adding <s>; LlamaConverter's decoder. Prefix schemes: "legacy"
(Prepend("▁") + Replace normalizer: a "▁" before every split), "first" (Metaspace
prepend_scheme "first", split False: only the string's first split; today's llava-hf
conversion), "always" (Metaspace "always"), and a byte-level BPE with add_prefix_space.
"""

import pickle

import numpy as np
import pytest

from leanpo_jax.data import tokenize as T
from leanpo_jax.models.llava_next_video.template import VICUNA_SYSTEM_PROMPT, VICUNA_V1

from llama_tokenizer import BOS, EOS, llama_like as _llama_like

transformers = pytest.importorskip("transformers")

SCHEMES = ("legacy", "first", "always", "bytelevel")
QUESTIONS = ("What colour is the shape?", "  Why does it zig-zag?\tÜber 漢字 😀", "\nline one\nline two ")
ANSWERS = ("It is red.", "Yes", "A red circle moves left, then stops.", "zig-zag: 漢字 😀 ...")


@pytest.fixture(scope="module")
def tokenizers():
    """{scheme: (ChatTokenizer with VICUNA_V1, the transformers reference, <video> id)}."""
    out = {}
    for scheme in SCHEMES:
        reference = transformers.PreTrainedTokenizerFast(tokenizer_object=_llama_like(scheme),
                                                         bos_token="<s>", eos_token="</s>")
        video = reference.convert_tokens_to_ids("<video>")
        chat = T.ChatTokenizer(_llama_like(scheme), vocab_size=len(reference), video_token_index=video,
                               template=VICUNA_V1)
        out[scheme] = (chat, reference, video)
    return out


def vicuna(question: str, n: int, system=VICUNA_SYSTEM_PROMPT) -> str:
    """The vicuna_v1 prompt as LLaVA renders it, the video as n <video> tokens (no <s>)."""
    head = "" if system is None else system + " "
    return head + "USER: " + ("<video>" * n + "\n" if n else "") + question + " ASSISTANT:"


def _ref(reference, text: str) -> list:
    return reference(text, add_special_tokens=True)["input_ids"]


def test_the_prefix_rules_the_variants_stand_on(tokenizers):
    """Observed transformers / tokenizers behaviour (what tokenizer_files' docstring states)."""
    def pieces(scheme, text):
        reference = tokenizers[scheme][1]
        return reference.convert_ids_to_tokens(_ref(reference, text))

    assert pieces("legacy", "Yes<video>Yes") == ["<s>", "▁Yes", "<video>", "▁Yes"]
    assert pieces("legacy", " Yes") == ["<s>", "▁", "▁Yes"]          # Prepend even before a space
    assert pieces("first", "Yes<video>Yes") == ["<s>", "▁Yes", "<video>", "Yes"]
    assert pieces("first", "<video>Yes") == ["<s>", "<video>", "Yes"]  # offset 0 is the added token
    assert pieces("first", " Yes") == ["<s>", "▁Yes"]
    assert pieces("always", "<video>Yes<video> Yes") == ["<s>", "<video>", "▁Yes", "<video>", "▁Yes"]
    assert pieces("bytelevel", "<video>Yes") == ["<s>", "<video>", "ĠYes"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("system", [VICUNA_SYSTEM_PROMPT, None])
def test_prompt_ids_equal_the_hf_ids_of_the_full_vicuna_string(tokenizers, scheme, system):
    chat, reference, video = tokenizers[scheme]
    if system is None:
        chat = T.ChatTokenizer(chat.tokenizer, vocab_size=chat.vocab_size, video_token_index=video,
                               template=VICUNA_V1, system_prompt=None)
    for question in QUESTIONS:
        for n in (0, 1, 6):
            prompt = chat.prompt_ids(question, n)
            assert prompt.dtype == np.int32
            assert prompt.tolist() == _ref(reference, vicuna(question, n, system)), (question, n)
            assert prompt[0] == BOS and int(np.sum(prompt == BOS)) == 1
            at = np.flatnonzero(prompt == video)
            assert len(at) == n and (n == 0 or at[-1] - at[0] == n - 1)


def test_the_schemes_differ_where_hf_says_they_do(tokenizers):
    # After the placeholders legacy puts "▁" before "\n"; Metaspace "first" does not.
    after = {s: tokenizers[s][1].convert_ids_to_tokens(tokenizers[s][0].prompt_ids("Yes", 2).tolist())
             for s in ("legacy", "first")}
    assert after["legacy"][after["legacy"].index("<video>") + 2:][:2] == ["▁", "<0x0A>"]
    assert after["first"][after["first"].index("<video>") + 2:][:1] == ["<0x0A>"]
    assert after["legacy"][1] == after["first"][1] == "▁A"         # the string's first split


@pytest.mark.parametrize("scheme", SCHEMES)
def test_response_ids_are_the_rest_of_the_full_conversation(tokenizers, scheme):
    chat, reference, _ = tokenizers[scheme]
    question = QUESTIONS[0]
    prompt_text = vicuna(question, 3)
    prompt = chat.prompt_ids(question, 3).tolist()
    for answer in ANSWERS:
        full = _ref(reference, prompt_text + " " + answer + "</s>")
        assert full[:len(prompt)] == prompt                     # the answer does not change the prompt
        ids, truncated = chat.response_ids(answer, 64)
        assert not truncated and ids.tolist() == full[len(prompt):], answer
        assert ids[-1] == EOS and int(np.sum(ids == EOS)) == 1
        # As generation decodes a reply (skip specials, strip): the space does not double.
        text = chat.tokenizer.decode(ids.tolist(), skip_special_tokens=True).strip()
        assert text == answer.strip()
        assert chat.response_ids(text, 64)[0].tolist() == ids.tolist()


def test_literal_special_text_in_a_record_stays_text(tokenizers):
    for scheme in SCHEMES:
        chat, reference, video = tokenizers[scheme]
        image = reference.convert_tokens_to_ids("<image>")
        prompt = chat.prompt_ids("Is there a <video> tag or <image> here? </s> <s>", 4)
        assert int(np.sum(prompt == video)) == 4 and image not in prompt.tolist()
        assert int(np.sum(prompt == BOS)) == 1 and EOS not in prompt.tolist()
        ids, _ = chat.response_ids("say <video> and </s> literally", 64)
        assert video not in ids.tolist() and ids.tolist().count(EOS) == 1 and ids[-1] == EOS


def test_response_truncation_keeps_the_rule(tokenizers):
    chat = tokenizers["first"][0]
    text = "A red circle moves left, then stops."
    full, _ = chat.response_ids(text, 64)
    n_text = len(full) - 1
    ids, truncated = chat.response_ids(text, n_text + 1)
    assert not truncated and ids[-1] == EOS
    ids, truncated = chat.response_ids(text, n_text)               # only </s> is cut
    assert truncated and ids.tolist() == full[:-1].tolist()
    ids, truncated = chat.response_ids(text, 2)
    assert truncated and ids.tolist() == full[:2].tolist()


def test_pickles_by_path_and_by_object(tokenizers, tmp_path):
    chat, reference, video = tokenizers["first"]
    path = tmp_path / "tokenizer.json"
    path.write_text(reference.backend_tokenizer.to_str(), encoding="utf-8")
    by_path = T.ChatTokenizer(str(path), vocab_size=chat.vocab_size, video_token_index=video, template=VICUNA_V1)
    q, a = QUESTIONS[1], ANSWERS[2]
    for c in (chat, by_path):
        again = pickle.loads(pickle.dumps(c))
        assert again.prompt_ids(q, 5).tolist() == chat.prompt_ids(q, 5).tolist() == _ref(reference, vicuna(q, 5))
        assert again.response_ids(a, 64)[0].tolist() == chat.response_ids(a, 64)[0].tolist()
    assert len(pickle.dumps(by_path)) < 10_000                      # the tokenizer travels by path


def test_byte_level_without_prefix_space_keeps_one_tokenizer():
    """Qwen: nothing to vary, so ChatML ids stay those of the single tokenizer (test_tokenize.py
    pins them against the full ChatML string)."""
    tok = T.load_cached(T.tokenizer_file(None))
    variants = T.split_variants(tok)
    assert variants[T.AFTER_SPECIAL] is tok and variants[T.INSIDE] is tok
    assert T.CHATML.response_prefix == ""
