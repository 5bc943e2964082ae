"""`python -m leanpo_jax.train --config configs/llava_ov_0p5b.py --config.model.init_from=DIR`:
a saved tiny checkpoint (own tokenizer, own preprocessor config) trains with no model or data
geometry key set, and its export loads again; a checkpoint whose tokenizer lacks the config's
video placeholder stops at start naming both files."""

import json
import os
import shutil

import numpy as np

from leanpo_jax.data import synthetic, tokenize
from leanpo_jax.models import load_hf

from tiny_checkpoint import MEAN, VIDEO_ID, make_checkpoint


def _train(run_cli, workdir, checkpoint, pairs, check=True):
    return run_cli(["-m", "leanpo_jax.train", "--config", "configs/llava_ov_0p5b.py", "--workdir", workdir,
                    f"--config.model.init_from={checkpoint}", f"--config.data.pairs={pairs}",
                    # One process reads the data here (the suite keeps one multi-worker test).
                    "--config.data.num_workers=0"], check=check)


def test_a_checkpoint_folder_decides_what_the_paper_config_trains(run_cli, tmp_path):
    checkpoint = make_checkpoint(str(tmp_path / "ckpt"), num_frames=16)
    info = synthetic.generate(str(tmp_path / "data"), 8, seed=0, num_frames_video=16, size=32)
    proc = _train(run_cli, str(tmp_path / "run"), checkpoint, info["pairs"])
    assert "done at step 1" in proc.stdout, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    train = [r for r in rows if r.get("kind", "train") == "train"]
    assert len(train) == 1 and np.isfinite(train[0]["loss"])
    # 16 frames (the config) x (2 x 2) tokens + 1 newline (the checkpoint's family), in P.
    assert train[0]["tokens_per_s"] > 0
    exported = str(tmp_path / "run" / "hf")
    with open(os.path.join(exported, "config.json")) as f:
        saved = json.load(f)["leanpo_jax"]
    assert saved["video_token_index"] == VIDEO_ID and saved["video_token"] == "<video>"
    assert tuple(load_hf(exported).config.vision.image_mean) == MEAN
    with open(os.path.join(exported, "tokenizer.json"), "rb") as a, open(os.path.join(checkpoint, "tokenizer.json"), "rb") as b:
        assert a.read() == b.read()  # the checkpoint's own tokenizer trained and was exported


def test_a_mismatched_tokenizer_stops_at_start_naming_both_files(run_cli, tmp_path):
    checkpoint = make_checkpoint(str(tmp_path / "ckpt"))
    shutil.copyfile(tokenize.tokenizer_file(""), os.path.join(checkpoint, "tokenizer.json"))
    info = synthetic.generate(str(tmp_path / "data"), 2, seed=0, num_frames_video=8, size=32)
    proc = _train(run_cli, str(tmp_path / "run"), checkpoint, info["pairs"], check=False)
    assert proc.returncode == 1, proc.stderr
    for name in ("tokenizer.json", "config.json"):
        assert os.path.join(checkpoint, name) in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "1")
