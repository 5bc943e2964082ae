"""The `eval.benchmark` config block: what `leanpo-eval` runs (leanpo_jax/eval/run.py).

Frames, frame size, chat template and tokenizer are not set here: they are the model's and the
`data` block's, read through the same code path as training (so a benchmark sees what the model
was trained on); `data.num_frames` is the frame count.
"""

from __future__ import annotations

from leanpo_jax.config_schema import Block, Field

EXTRACTOR_NAMES = ("lmms-eval-2024", "lmms-eval-2026")
SCORING_MODES = ("generate", "likelihood")

BENCHMARK = Block(
    "video benchmark evaluation (python -m leanpo_jax.eval / leanpo-eval)",
    task=Field("", "Benchmark: videomme, mlvu, longvideobench, nextqa or mcq (the --task flag)"),
    data=Field("", "The benchmark's local file: .parquet, .json or .jsonl (the --data flag)"),
    video_root=Field("", 'Folder the rows\' videos are found under ("" = the data file\'s folder)'),
    extractor=Field("lmms-eval-2024", "Answer-letter extraction rule (eval/extract.py); every report "
                    "names the one that ran", choices=EXTRACTOR_NAMES),
    post_prompt=Field("default", 'Text after the options: "default" = the task\'s lmms-eval default, a name of '
                      "lmms-eval's per-model variants (videomme: llava_vid, gpt4v, no_kwargs; mlvu: plm, test; "
                      "nextqa: answer_directly; eval/tasks.py), anything else is used literally"),
    batch_size=Field(4, "Questions generated per batch", rule=">= 1"),
    max_items=Field(0, "Evaluate only the first N rows of the file (0 = all)", rule=">= 0"),
    max_new_tokens=Field(0, "Tokens generated per answer (0 = the task's lmms-eval setting)", rule=">= 0"),
    seed=Field(0, "Seed of the random letter LongVideoBench gives an unparsable answer"),
    scoring=Field("generate", "generate: greedy answer, then letter extraction (lmms-eval's way); likelihood: the "
                  "option letter the model gives the highest log-probability as its first answer token (one "
                  "prefill, no sampling; reported as extractor \"likelihood\")", choices=SCORING_MODES),
    every=Field(0, "Training: run this benchmark every N steps and at the last step, logging "
                "eval/<task>/accuracy (0 = never; one process only)", rule=">= 0"),
)
