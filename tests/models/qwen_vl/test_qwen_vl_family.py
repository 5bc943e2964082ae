"""Qwen-VL family facts and its bad inputs: the interface (frames, positions, decoding, token
counts), a config without mrope_section, a tokenizer whose id 151656 is not <|video_pad|>, and
videos the direct resize to the bucket cannot use (too small, aspect far off) -> counted skips."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from leanpo_jax.data import records, tokenize, video
from leanpo_jax.data.config import data_config
from leanpo_jax.data.pipeline import DataPipeline
from leanpo_jax.models import build_model, family_of, get_preset, resolve_model, save_hf
from leanpo_jax.models.qwen_vl.config import num_video_tokens
from leanpo_jax.models.qwen_vl.hf_config import config_from_hf, transformers_dict

PRESET = "qwen2.5-vl-tiny"
CONFIG = get_preset(PRESET)
VIDEO_PAD = 151656


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny preset saved as a checkpoint folder (save_hf; no tokenizer of its own)."""
    return save_hf(build_model(CONFIG, seed=0), str(tmp_path_factory.mktemp("qwen_ckpt")))


def test_interface_frames_positions_decoding_and_token_counts():
    family = family_of(CONFIG)
    interface = family.interface(CONFIG)
    policy = interface.frames
    assert policy.size == (84, 84) and policy.resize == "direct"
    assert policy.min_source_side == 28 and policy.max_aspect_distortion == 2.0
    assert interface.video_token_index == VIDEO_PAD and interface.video_tokens(4) == 18
    assert interface.tokenizer == tokenize.default_tokenizer_dir()
    table = interface.positions_fn(np.zeros(1))
    assert table.shape == (3, 1) and table.dtype == np.int32 and not table.any()
    greedy = {"temperature": 0.0, "top_p": 1.0}
    assert family.decoding_defaults(CONFIG) == {"winner": greedy, "loser": greedy}
    v2 = get_preset("qwen2-vl-tiny")
    assert family.interface(v2).frames.size == (56, 56) and family.interface(v2).video_tokens(4) == 8
    # 448 x 448, 32 frames: 16 temporal patches x 16 x 16 merged tokens.
    assert num_video_tokens(get_preset("qwen2.5-vl-7b"), 32) == 4096


def test_a_config_without_mrope_section_is_refused_naming_rope_parameters():
    d = transformers_dict(CONFIG)
    assert d["text_config"]["rope_parameters"]["mrope_section"] == [2, 3, 3]
    del d["text_config"]["rope_parameters"]["mrope_section"]
    with pytest.raises(ValueError, match=r"config\.json: .*lack 'mrope_section'.*rope_parameters"):
        config_from_hf(d)
    with pytest.raises(ValueError, match=r"/ckpt/config\.json"):
        config_from_hf(d, "/ckpt")


def test_a_tokenizer_without_video_pad_at_151656_is_refused(saved, tmp_path):
    interface = resolve_model(init_from=saved).interface()
    assert interface.video_token == "<|video_pad|>" and interface.video_token_index == VIDEO_PAD
    folder = str(tmp_path / "renamed")
    shutil.copytree(tokenize.default_tokenizer_dir(), folder)
    path = os.path.join(folder, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    [entry] = [a for a in d["added_tokens"] if a["id"] == VIDEO_PAD]
    entry["content"] = "<|clip_pad|>"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f)
    with pytest.raises(ValueError, match=r"video placeholder is '<\|video_pad\|>' \(video_token_index 151656\)"
                                         r".*this tokenizer's id 151656 is '<\|clip_pad\|>'"):
        tokenize.ChatTokenizer.for_model(interface, folder)
    chat = tokenize.ChatTokenizer.for_model(interface, tokenize.default_tokenizer_dir())
    ids = chat.prompt_ids("What moves?", 18)
    assert int(np.sum(ids == VIDEO_PAD)) == 18


def _folder(root, name, hw, n=2):
    os.makedirs(os.path.join(root, name))
    rng = np.random.default_rng(len(name))
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(os.path.join(root, name, f"{i}.png"))


def test_videos_the_bucket_cannot_use_are_counted_skips(tmp_path):
    """20 x 20 (under one 28-px patch pair) and 56 x 400 (aspect 7.1x off the 84 x 84 bucket)
    are skipped, counted by reason and listed naming the record and the file; 60 x 90 (1.5x)
    and 120 x 90 (1.33x) pass."""
    root = str(tmp_path)
    shapes = {"ok": (60, 90), "tiny": (20, 20), "strip": (56, 400), "tall": (120, 90)}
    for name, hw in shapes.items():
        _folder(root, name, hw)
    pairs = os.path.join(root, "pairs.jsonl")
    with open(pairs, "w") as f:
        for name in shapes:
            f.write(json.dumps({"id": name, "video": name, "prompt": "What moves?", "chosen": "A circle.",
                                "rejected": "Nothing."}) + "\n")
    data = data_config()
    data.pairs, data.video_root, data.num_frames, data.batch_size = pairs, root, 4, 2
    data.max_prompt_text_tokens, data.response_buckets, data.max_response_tokens = 48, (16,), 16
    interface = resolve_model(PRESET).interface()
    skipped = os.path.join(root, "skipped.jsonl")
    with DataPipeline(data, model=interface, train=False, process_index=0, process_count=1,
                      skipped_path=skipped) as pipe:
        batches = [{k: np.array(v) for k, v in b.items()} for b in pipe]
        stats = pipe.stats()
    assert stats["ok"] == 2
    assert stats["skipped"] == {records.VIDEO_TOO_SMALL: 1, records.ASPECT_MISMATCH: 1}
    kept = sorted(int(i) for b in batches for i in b["record_index"] if i >= 0)
    assert kept == [0, 3] and all(b["frames"].shape[2:] == (84, 84, 3) for b in batches)
    with open(skipped) as f:
        listed = {r["id"]: r for r in map(json.loads, f)}
    assert set(listed) == {"tiny", "strip"}
    tiny, strip = listed["tiny"], listed["strip"]
    assert tiny["reason"] == records.VIDEO_TOO_SMALL and os.path.join(root, "tiny") in tiny["detail"]
    assert "20x20" in tiny["detail"] and ">= 28 px" in tiny["detail"]
    assert strip["reason"] == records.ASPECT_MISMATCH and os.path.join(root, "strip") in strip["detail"]
    assert "56x400" in strip["detail"] and "7.14x" in strip["detail"] and "max_aspect_distortion=2" in strip["detail"]
    # The reader itself: the same reasons as VideoErrors naming the path.
    with pytest.raises(video.VideoError, match=r"video_too_small: video '.*tiny'"):
        video.read_video(os.path.join(root, "tiny"), 4, **video.policy_read_args(interface.frames))
    # Other families leave the limits unset: the same 20 x 20 video resizes.
    assert video.read_video(os.path.join(root, "tiny"), 4, image_size=84)[0].shape == (4, 84, 84, 3)
