"""Data: preference records (JSONL) -> decoded frames + chat-template token ids -> batches.

Modules (import the one you need; importing this package loads nothing heavy):
  records   JSONL schemas, a byte-offset line index, validation, skip reasons (stdlib + numpy).
  contract  what the data side needs from a model (ModelInterface: frames, template, token counts).
  batch     the one batch schema (fields, shapes, dtypes) and its constructor.
  tokenize  a model's chat template as ids, the video placeholder inserted as ids (tokenizers).
  chat_template  a checkpoint's own jinja chat template as a ChatTemplate (data.chat_template).
  video     decoding, frame sampling and resizing (PyAV / PIL).
  synthetic the synthetic shapes dataset generator (CLI).
  pipeline  grain datasets -> static-shape batches, skip accounting, iterator state.
  check     the dataset checker CLI (`leanpo-check-data`).
"""
