"""Data: preference records (JSONL) -> decoded frames + chat-template token ids -> batches.

Modules (import the one you need; importing this package loads nothing heavy):
  records   JSONL schemas, a byte-offset line index, validation, skip reasons (stdlib + numpy).
  tokenize  the ChatML template for Qwen2 models with the video placeholder as ids (tokenizers).
  video     decoding, frame sampling and resizing (PyAV / PIL).
  synthetic the synthetic shapes dataset generator (CLI).
  pipeline  grain datasets -> static-shape batches, skip accounting, iterator state.
  check     the dataset checker CLI (`leanpo-check-data`).
"""
