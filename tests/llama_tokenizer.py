"""Small Llama look-alike tokenizers, trained offline (no Llama tokenizer ships on PyPI): BPE with
byte fallback, <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF>, learnt pieces (optionally padded to 32000),
<video> / <image> special added tokens, a TemplateProcessing post-processor adding <s> and
LlamaConverter's decoder. Prefix schemes: "legacy" (Prepend("▁") + Replace normalizer), "first"
(Metaspace prepend_scheme "first", split False: today's llava-hf conversion), "always", and a
byte-level BPE with add_prefix_space ("bytelevel")."""

import json
import os

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from leanpo_jax.models.llava_next_video.template import VICUNA_SYSTEM_PROMPT

CORPUS = [VICUNA_SYSTEM_PROMPT, "USER: What colour is the shape? ASSISTANT: It is red.",
          "USER: Which way does the circle move? ASSISTANT: A red circle moves left, then stops.",
          "Yes, the square is blue and it moves right."]
BOS, EOS = 1, 2


def _sentencepiece_bpe(rows: int = 0) -> Tokenizer:
    """BPE learnt on words ("▁word"), rebuilt with Llama's id layout and byte fallback."""
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always", split=True)
    learner.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    learnt = json.loads(learner.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece, _ in sorted(learnt["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    while len(vocab) < rows:  # filler pieces up to Llama's 32000, so the added tokens get its ids
        vocab[f"<filler_{len(vocab)}>"] = len(vocab)
    return Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in learnt["merges"]], unk_token="<unk>",
                                byte_fallback=True, fuse_unk=True))


def _byte_level() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def llama_like(scheme: str = "first", rows: int = 0, added=("<video>", "<image>")) -> Tokenizer:
    """A Llama look-alike with prefix `scheme`; `rows` > 0 pads the pieces to that many ids (32000:
    <video> 32000, <image> 32001 as in LLaVA-NeXT-Video's tokenizer); `added`: its added specials."""
    if scheme == "bytelevel":
        tok = _byte_level()
    else:
        tok = _sentencepiece_bpe(rows)
        if scheme == "legacy":
            tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        else:
            tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<unk>", "<s>", "</s>") + tuple(added)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", BOS)])
    return tok


def write_llama_tokenizer(folder: str, scheme: str = "first", added=("<video>", "<image>")) -> str:
    """Saves a 32000-piece look-alike (ids as LLaVA-NeXT-Video's) as folder/tokenizer.json -> folder."""
    os.makedirs(folder, exist_ok=True)
    llama_like(scheme, rows=32000, added=added).save(os.path.join(folder, "tokenizer.json"))
    return folder
