"""Chat-template token ids for Video-LLMs, with the video placeholder inserted as ids.

The template is the model's `contract.ChatTemplate` (its family provides it). For Qwen2
ChatML (`CHATML`, LLaVA-OneVision / LLaVA-Video) the prompt is (system turn omitted when
`system_prompt is None`):

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n
    [video_token_index] * num_video_tokens
    \\n[{time instruction}\\n]{question}<|im_end|>\\n<|im_start|>assistant\\n

Response: the tokens of the template's response_prefix + the response text, followed by the
template's end-of-turn token (<|im_end|> for ChatML; part of the response, of its labels and of
its length).

Rules:
  * The placeholder is inserted as ids, exactly `num_video_tokens` copies of the model's
    `video_token_index`, never as text. All text (question, responses, system prompt) is
    tokenised with special-token matching OFF, so "<video>", "<|im_end|>" or
    "<|object_ref_end|>" typed in a record are ordinary text pieces; ChatML special ids come
    only from the template. A text piece that still yields the placeholder id (possible only
    with a tokenizer where it is a non-special added token) is a PLACEHOLDER_IN_TEXT record.
  * Segmenting: the text between two special ids is tokenised as one piece, exactly as a
    HF tokenizer tokenises the full rendered string (it splits at added tokens first), so the
    ids equal `tokenizer(full_string)` with the placeholder as a special token and the
    template's bos from the post-processor. Each piece uses the split variant of its place
    (tokenizer_files: the string's first split, one after an added token, the response inside
    the prompt's last split), so SentencePiece "▁" prefixes (legacy Llama: every split;
    Metaspace "first": only the string's first) come out as HF puts them. Byte-level BPE
    (Qwen) has one variant for all.
  * Literal "<video>"/"<image>" markers in a question are kept verbatim (no stripping).
  * Prompt and video are never truncated: more than `max_prompt_text_tokens` template+question
    tokens (everything but the placeholder ids) is a PROMPT_TOO_LONG RecordError.
  * Truncation of responses: the first `max_response_tokens` ids of [text ids ‖ <|im_end|>] are
    kept. A truncated response therefore ends WITHOUT <|im_end|> (also when only <|im_end|> was
    cut): the labels are an exact prefix of the real response, as in TRL, instead of teaching
    the model to end a turn mid-sentence. `truncated` is True whenever anything was cut.
  * No produced id is >= the embedding rows (`vocab_size`): checked at construction (the
    tokenizer's whole id range) and on every output.

Label convention for the pipeline and the train step: labels are the response ids themselves.
With x = [prompt ‖ response] and L = len(prompt), response token j (0-based) is predicted by
the logits at position L - 1 + j of x, i.e. logp_j = log_softmax(logits[L - 1 + j])[response[j]];
the mask covers exactly the response ids (padding excluded).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
from tokenizers import Tokenizer

from leanpo_jax.data import records as records_lib
from leanpo_jax.data.contract import ChatTemplate, ModelInterface
from leanpo_jax.data.tokenizer_files import (  # noqa: F401  (the tokenizer API of this module)
    AFTER_SPECIAL, INSIDE, TOKENIZER_FILE, TOKENIZER_SIDE_FILES, default_tokenizer_dir, load_cached,
    load_cached_variants, load_tokenizer, prepared, save_tokenizer_files, split_variants, tokenizer_file,
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Qwen2 ChatML, the template LLaVA-OneVision / LLaVA-Video were trained with (conv_qwen).
CHATML = ChatTemplate(
    system=IM_START + "system\n{system}" + IM_END + "\n", user_head=IM_START + "user\n",
    after_video="\n", user_tail=IM_END + "\n" + IM_START + "assistant\n", response_end=IM_END,
    specials=(IM_START, IM_END), default_system_prompt=DEFAULT_SYSTEM_PROMPT)
# ChatTokenizer's system_prompt default: the template's own default system prompt.
_TEMPLATE_DEFAULT = object()
def time_instruction(duration: float, timestamps: Sequence[float]) -> str:
    """LLaVA-Video's time instruction (its training wording, docs/model_facts.md §2), e.g.
    "The video lasts for 12.00 seconds, and 4 frames are uniformly sampled from it. These frames
    are located at 0.00s,4.00s,8.00s,12.00s.Please answer the following questions related to
    this video." (sic: no space after the timestamps' period, as in LLaVA-NeXT)."""
    times = ",".join(f"{float(t):.2f}s" for t in timestamps)
    return (f"The video lasts for {float(duration):.2f} seconds, and {len(timestamps)} frames are uniformly "
            f"sampled from it. These frames are located at {times}.Please answer the following questions "
            "related to this video.")


class PlaceholderInText(ValueError):
    """Text tokenised to the video placeholder id (see PLACEHOLDER_IN_TEXT)."""


class ChatTokenizer:
    """Prompt/response ids for one model: its chat template, embedding rows and placeholder id.

    `tokenizer`: a folder / tokenizer.json path (None or "" = the default Qwen tokenizer), a
    `tokenizers.Tokenizer` or a transformers fast tokenizer (copied, never modified).
    `template`: the model's `ChatTemplate` (default: Qwen2 ChatML, `CHATML`); `system_prompt`:
    the system turn's text, None = no system turn, default = the template's default.
    Raises ValueError if the tokenizer's ids reach `vocab_size` (the embedding rows), if
    `video_token_index` is not a row, or if a template special is not a single token.
    Pickles by path when built from one (workers reload it once per process).
    """

    def __init__(self, tokenizer=None, *, vocab_size: int, video_token_index: Optional[int],
                 template: ChatTemplate = None, system_prompt=_TEMPLATE_DEFAULT):
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            self._file = tokenizer_file(tokenizer)
            self._where = self._file
            tok = load_cached(self._file)
        else:
            backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
            if not isinstance(backend, Tokenizer):
                raise TypeError("tokenizer must be a path, a tokenizers.Tokenizer or a fast tokenizer, "
                                f"got {type(tokenizer)}")
            self._file, self._where = None, "the given tokenizer object"
            tok = prepared(Tokenizer.from_str(backend.to_str()))
        self._tok = tok
        self._variants = self._load_variants()
        self.template = CHATML if template is None else template
        self.vocab_size = int(vocab_size)
        self.video_token_index = None if video_token_index is None else int(video_token_index)
        self.system_prompt = (self.template.default_system_prompt if system_prompt is _TEMPLATE_DEFAULT
                              else system_prompt)
        self._build()

    @classmethod
    def for_model(cls, model: ModelInterface, tokenizer=None, *,
                  system_prompt=_TEMPLATE_DEFAULT) -> "ChatTokenizer":
        """For a `ModelInterface`: its template, vocab rows and placeholder id; `tokenizer`
        None or "" = the model's own (`model.tokenizer`), which must then exist."""
        if tokenizer is None or (isinstance(tokenizer, str) and not tokenizer):
            if model.tokenizer is None:
                raise ValueError(f"the model ({model.source}) has no tokenizer of its own: set "
                                 "data.tokenizer to a folder holding its tokenizer.json")
            tokenizer = model.tokenizer
        chat = cls(tokenizer, vocab_size=model.vocab_size, video_token_index=model.video_token_index,
                   template=model.template, system_prompt=system_prompt)
        if model.video_token is not None:  # a checkpoint: its tokenizer must know its placeholder
            actual = chat.tokenizer.id_to_token(model.video_token_index)
            if actual != model.video_token:
                raise ValueError(
                    f"{chat.where} and {model.source}/config.json disagree: the model's video placeholder "
                    f"is {model.video_token!r} (video_token_index {model.video_token_index}) but this "
                    f"tokenizer's id {model.video_token_index} is {actual!r}. Use the checkpoint's own "
                    "tokenizer (data.tokenizer=\"\"), or a tokenizer where that id is the placeholder")
        return chat

    @property
    def where(self) -> str:
        """The tokenizer.json this was loaded from (or a description of the object)."""
        return self._where

    def _special(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"tokenizer ({self._where}) lacks the chat template's special token "
                             f"{token!r}: use the model's own tokenizer")
        return int(i)

    def _segments(self, parts) -> list:
        """Template text pieces, user text, the bos and the VIDEO marker -> id arrays. Text
        between two special ids (template and user text alike) is tokenised as ONE piece, as a
        HF tokenizer does with the rendered string, with the split variant of its place (the
        bos, a post-processor's token, does not count); a piece holding user text is checked
        for the placeholder id (PlaceholderInText)."""
        out, buffer, has_user, started = [], [], False, False

        def flush():
            nonlocal buffer, has_user, started
            text = "".join(buffer)
            if buffer:
                tok = self._variants[AFTER_SPECIAL] if started else self._tok
                out.append(self._checked_text(text, "prompt", tok) if has_user else self._text(text, tok))
            started = started or bool(text)
            buffer, has_user = [], False

        for kind, value in parts:
            if kind == "bos":
                flush()
                out.append(np.asarray([self._special(value)], np.int32))
            elif kind == "video":
                flush()
                out.append(np.full(int(value), self.video_token_index, np.int32))
                started = started or int(value) > 0
            elif kind == "user":
                buffer.append(value)
                has_user = True
            else:
                for piece in self._split_specials(value):
                    if piece in self.template.specials:
                        flush()
                        out.append(np.asarray([self._special(piece)], np.int32))
                        started = True
                    elif piece:
                        buffer.append(piece)
        flush()
        return out

    def _split_specials(self, text: str) -> list:
        pieces = [text]
        for special in self.template.specials:
            split = []
            for piece in pieces:
                if piece in self.template.specials:
                    split.append(piece)
                    continue
                chunks = piece.split(special)
                for j, chunk in enumerate(chunks):
                    if j:
                        split.append(special)
                    split.append(chunk)
            pieces = split
        return pieces

    def _prompt_parts(self, user_text: str, num_video_tokens: int) -> list:
        t = self.template
        parts = []
        if t.bos:
            parts.append(("bos", t.bos))
        if self.system_prompt is not None:
            parts.append(("template", t.system.format(system=self.system_prompt)))
        parts.append(("template", t.user_head))
        if t.video_first:
            if num_video_tokens:
                parts += [("template", t.before_video), ("video", num_video_tokens),
                          ("template", t.after_video)]
            parts.append(("user", user_text))
        else:
            parts.append(("user", user_text))
            if num_video_tokens:
                parts += [("template", t.before_video), ("video", num_video_tokens)]
        parts.append(("template", t.user_tail))
        return parts

    def _build(self) -> None:
        tok = self._tok
        entries = max(tok.get_vocab_size(with_added_tokens=True),
                      max(tok.get_vocab(with_added_tokens=True).values()) + 1)
        if entries > self.vocab_size:
            raise ValueError(
                f"tokenizer ({self._where}) has ids up to {entries - 1} but the model's embedding has only "
                f"{self.vocab_size} rows (config.text.vocab_size): use the model's own tokenizer or a "
                f"config whose vocab_size is >= {entries}")
        if self.video_token_index is not None and not 0 <= self.video_token_index < self.vocab_size:
            raise ValueError(f"video_token_index {self.video_token_index} is not an embedding row "
                             f"(vocab_size {self.vocab_size}): fix the model config")
        self.specials = {s: self._special(s) for s in self.template.specials}
        self.end_id = self.specials[self.template.response_end]
        # A response continues the prompt's last split when the prompt ends in text (ChatML's
        # "assistant\n", vicuna's " ASSISTANT:"); after a closing special it starts a new one.
        # An empty user_tail: the question ends the prompt (video_first), else the video.
        tail = [p for p in self._split_specials(self.template.user_tail) if p]
        ends_in_text = tail[-1] not in self.template.specials if tail else self.template.video_first
        self._response_where = INSIDE if ends_in_text else AFTER_SPECIAL
        # The template with an empty question: its ids must never hold the placeholder id.
        template_ids = np.concatenate(self._segments(self._prompt_parts("", 0)))
        if self.video_token_index is not None and np.any(template_ids == self.video_token_index):
            raise ValueError(f"the chat template or system prompt tokenises to the video placeholder id "
                             f"{self.video_token_index}")

    def _load_variants(self) -> dict:
        return load_cached_variants(self._file) if self._file is not None else split_variants(self._tok)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_variants"] = None  # rebuilt from the tokenizer in the receiving process
        if self._file is not None:
            state["_tok"] = None  # reloaded from the file in the receiving process
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._tok = load_cached(self._file) if self._file is not None else prepared(self._tok)
        self._variants = self._load_variants()

    @property
    def tokenizer(self) -> Tokenizer:
        """The underlying tokenizer (special-token matching off); do not change its settings."""
        return self._tok

    def _text(self, text: str, tok: Optional[Tokenizer] = None) -> np.ndarray:
        """ids of `text` as one split (`tok`: its split variant, default the string's start)."""
        return np.asarray((self._tok if tok is None else tok).encode(text, add_special_tokens=False).ids, np.int32)

    def _checked_text(self, text: str, what: str, tok: Optional[Tokenizer] = None) -> np.ndarray:
        ids = self._text(text, tok)
        if np.any(ids == self.video_token_index):
            raise PlaceholderInText(
                f"the {what} tokenises to the video placeholder id {self.video_token_index}")
        return ids

    def _in_range(self, ids: np.ndarray) -> np.ndarray:
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
            raise ValueError(f"produced id {bad} outside the embedding rows [0, {self.vocab_size}) "
                             f"(tokenizer: {self._where})")
        return ids

    def text_ids(self, text: str) -> np.ndarray:
        """int32 ids of plain text (special-token text is literal); no template."""
        return self._in_range(self._text(text))

    def prompt_ids(self, question: str, num_video_tokens: int,
                   time_instruction: Optional[str] = None) -> np.ndarray:
        """int32 ids of the templated prompt up to and including the assistant turn's start.

        Raises PlaceholderInText (a ValueError) if the question/time instruction yields the
        placeholder id. Not length-checked (`encode_pair` checks max_prompt_text_tokens).
        """
        if int(num_video_tokens) < 0:
            raise ValueError(f"num_video_tokens must be >= 0, got {num_video_tokens}")
        if int(num_video_tokens) and self.video_token_index is None:
            raise ValueError("this model takes no video (text-only): num_video_tokens must be 0")
        user = (time_instruction + "\n" if time_instruction else "") + question
        return self._in_range(np.concatenate(self._segments(self._prompt_parts(user, int(num_video_tokens)))))

    def response_ids(self, text: str, max_response_tokens: int) -> tuple:
        """(int32 ids of response_prefix + text ‖ the end-of-turn id cut to max_response_tokens,
        truncated: bool), tokenised as it continues the prompt. See the module docstring: a
        truncated response does not end with the end-of-turn id."""
        if int(max_response_tokens) < 1:
            raise ValueError(f"max_response_tokens must be >= 1, got {max_response_tokens}")
        text = self.template.response_prefix + text
        tok = self._variants[self._response_where]
        ids = np.concatenate([self._checked_text(text, "response", tok), np.asarray([self.end_id], np.int32)])
        truncated = ids.shape[0] > int(max_response_tokens)
        return self._in_range(ids[: int(max_response_tokens)]), bool(truncated)

    def _encode(self, record, responses: dict, *, num_video_tokens, max_prompt_text_tokens,
                max_response_tokens, time_instruction) -> dict:
        try:
            prompt = self.prompt_ids(record.prompt, num_video_tokens, time_instruction)
        except PlaceholderInText as e:
            raise records_lib.RecordError(records_lib.BadRecord(
                record.source, record.id, records_lib.PLACEHOLDER_IN_TEXT, f"field 'prompt': {e}")) from None
        text_tokens = int(prompt.shape[0]) - int(num_video_tokens)
        if text_tokens > int(max_prompt_text_tokens):
            raise records_lib.RecordError(records_lib.BadRecord(
                record.source, record.id, records_lib.PROMPT_TOO_LONG,
                f"field 'prompt': the chat template + prompt take {text_tokens} text tokens, more than "
                f"max_prompt_text_tokens={int(max_prompt_text_tokens)}"))
        out = {"prompt_ids": prompt, "prompt_text_tokens": text_tokens}
        for name, text in responses.items():
            try:
                out[f"{name}_ids"], out[f"{name}_truncated"] = self.response_ids(text, max_response_tokens)
            except PlaceholderInText as e:
                raise records_lib.RecordError(records_lib.BadRecord(
                    record.source, record.id, records_lib.PLACEHOLDER_IN_TEXT,
                    f"field '{name}': {e}")) from None
        return out

    def encode_pair(self, record, *, num_video_tokens: int, max_prompt_text_tokens: int,
                    max_response_tokens: int, time_instruction: Optional[str] = None) -> dict:
        """A PairRecord -> {"prompt_ids", "prompt_text_tokens", "chosen_ids", "chosen_truncated",
        "rejected_ids", "rejected_truncated"} (int32 arrays, int, bools).

        Raises records.RecordError (reason PROMPT_TOO_LONG or PLACEHOLDER_IN_TEXT, naming the
        record's file:line and id) instead of truncating a prompt.
        """
        return self._encode(record, {"chosen": record.chosen, "rejected": record.rejected},
                            num_video_tokens=num_video_tokens, max_prompt_text_tokens=max_prompt_text_tokens,
                            max_response_tokens=max_response_tokens, time_instruction=time_instruction)

    def encode_triplet(self, record, *, num_video_tokens: int, max_prompt_text_tokens: int,
                       max_response_tokens: int, time_instruction: Optional[str] = None) -> dict:
        """A TripletRecord -> {"prompt_ids", "prompt_text_tokens", "answer_ids", "answer_truncated"};
        errors as `encode_pair`."""
        return self._encode(record, {"answer": record.answer},
                            num_video_tokens=num_video_tokens, max_prompt_text_tokens=max_prompt_text_tokens,
                            max_response_tokens=max_response_tokens, time_instruction=time_instruction)

    def encode_record(self, record, **kwargs) -> dict:
        """`encode_pair` or `encode_triplet` by the record's type (same keyword arguments)."""
        if isinstance(record, records_lib.PairRecord):
            return self.encode_pair(record, **kwargs)
        if isinstance(record, records_lib.TripletRecord):
            return self.encode_triplet(record, **kwargs)
        raise TypeError(f"expected a PairRecord or TripletRecord, got {type(record).__name__}")
