"""The grain pipeline: static shapes, buckets, compile count, resume, bad records, hosts, workers.

All data are real files: videos from the synthetic generator plus hand-made broken files.
Every pipeline here uses 0 workers except `test_two_workers_resume_and_worker_crash`.
"""

import json
import multiprocessing
import os
import signal
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leanpo_jax.data.config import data_config

from leanpo_jax.data import check, pipeline, records, synthetic
from leanpo_jax.models import resolve_model

from conftest import REPO_ROOT

# The model the data side serves: the tiny preset (24 px frames, 17 video tokens at 4 frames).
TINY = resolve_model("tiny").interface()
GOOD = 9  # good records in `bad.jsonl` besides the bad ones below

# (line kind, expected reason) for every bad-input kind; see `data` below.
BAD_KINDS = {
    "zero_byte": records.UNREADABLE_VIDEO,
    "not_a_video": records.UNREADABLE_VIDEO,
    "random_bytes": records.UNREADABLE_VIDEO,
    "truncated": records.UNREADABLE_VIDEO,
    "missing_file": records.MISSING_VIDEO,
    "empty_frame_folder": records.NO_FRAMES,
    "malformed_json": records.MALFORMED_JSON,
    "missing_field": records.MISSING_FIELD,
    "empty_field": records.EMPTY_FIELD,
    "wrong_type": records.WRONG_TYPE,
    "prompt_too_long": records.PROMPT_TOO_LONG,
    "duplicate_id": records.DUPLICATE_ID,
}


def _pair(rid, video, n_words=3, prompt="What moves in the video?"):
    return {"id": rid, "video": video, "prompt": prompt, "chosen": " ".join(["red"] * n_words),
            "rejected": "A blue square."}


def _bad_line(kind, videos):
    good = _pair(f"bad-{kind}", videos[0])
    if kind == "malformed_json":
        return '{"id": "bad-json", "video": '
    if kind in ("missing_field", "empty_field", "wrong_type"):
        if kind == "missing_field":
            del good["rejected"]
        elif kind == "empty_field":
            good["chosen"] = ""
        else:
            good["prompt"] = 7
        return json.dumps(good)
    if kind == "prompt_too_long":
        return json.dumps(_pair("bad-long", videos[0], prompt="why " * 200))
    if kind == "duplicate_id":
        return json.dumps(_pair("good-0", videos[1]))
    files = {"zero_byte": "broken/zero.mp4", "not_a_video": "broken/notes.mp4",
             "random_bytes": "broken/random.webm", "truncated": "broken/truncated.mp4",
             "missing_file": "broken/missing.mp4", "empty_frame_folder": "broken/empty_frames"}
    return json.dumps(_pair(f"bad-{kind}", files[kind]))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A synthetic folder plus `lengths.jsonl` (responses of graded lengths: several buckets)
    and `bad.jsonl` (GOOD good records, then one line of every BAD_KINDS kind)."""
    root = str(tmp_path_factory.mktemp("pipeline_data"))
    synthetic.generate(root, 4, seed=0, num_frames_video=8, size=32)
    with open(os.path.join(root, "pairs.jsonl")) as f:
        videos = [json.loads(line)["video"] for line in f if line.strip()]
    os.makedirs(os.path.join(root, "broken", "empty_frames"))
    open(os.path.join(root, "broken", "zero.mp4"), "wb").close()
    with open(os.path.join(root, "broken", "notes.mp4"), "w") as f:
        f.write("these are notes, not a video\n" * 20)
    with open(os.path.join(root, "broken", "random.webm"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(4096))
    with open(os.path.join(root, videos[0]), "rb") as f:
        head = f.read()
    with open(os.path.join(root, "broken", "truncated.mp4"), "wb") as f:
        f.write(head[: len(head) // 3])
    # Words per chosen response: 1 word ~ 1 token, so lengths cross the 16/32/64 buckets and
    # the 64-token truncation.
    words = [2, 5, 20, 3, 40, 4, 90, 6, 10, 25, 3, 8, 2]
    with open(os.path.join(root, "lengths.jsonl"), "w") as f:
        for i, n in enumerate(words):
            f.write(json.dumps(_pair(f"len-{i}", videos[i % len(videos)], n)) + "\n")
    with open(os.path.join(root, "bad.jsonl"), "w") as f:
        for i in range(GOOD):
            f.write(json.dumps(_pair(f"good-{i}", videos[i % len(videos)], 2 + 3 * i)) + "\n")
            if i == 4:
                f.write("\n")  # blank lines are not records
        for kind in BAD_KINDS:
            f.write(_bad_line(kind, videos) + "\n")
    return root


def config(root, name, **changes):
    cfg = check.default_data_config()
    cfg.pairs = os.path.join(root, name)
    cfg.update(changes)
    return cfg


def make(cfg, train, **kwargs):
    kwargs.setdefault("process_index", 0)
    kwargs.setdefault("process_count", 1)
    kwargs.setdefault("model", TINY)
    return pipeline.DataPipeline(cfg, train=train, **kwargs)


def collect(pipe, n=None):
    out = []
    for batch in pipe:
        out.append({k: np.array(v) for k, v in batch.items()})
        if n is not None and len(out) == n:
            break
    return out


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def eval_batches(data):
    with make(config(data, "lengths.jsonl", batch_size=3), train=False) as pipe:
        return pipe, collect(pipe)


def test_checker_defaults_are_the_data_block_the_configs_start_from():
    """The checker's defaults are leanpo_jax.data.config's block; the tiny config keeps its
    model, frames and tokenizer and only shortens lengths / adds training-only keys."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("tiny", os.path.join(REPO_ROOT, "configs", "tiny.py"))
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    defaults = check.default_data_config().to_dict()
    assert defaults == data_config().to_dict()
    block = tiny.get_config().data.to_dict()
    assert set(defaults) <= set(block)
    for key in ("num_frames", "tokenizer", "batch_size", "padding_side", "kind"):
        assert block[key] == defaults[key], key


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="data.max_response_tokens=65"):
        pipeline.resolve_spec(config("", "x", max_response_tokens=65), TINY)
    with pytest.raises(ValueError, match="data.padding_side"):
        pipeline.resolve_spec(config("", "x", padding_side="left"), TINY)
    with pytest.raises(ValueError, match="data.response_buckets"):
        pipeline.resolve_spec(config("", "x", response_buckets=(32, 16)), TINY)


def test_video_bucket_vote_by_aspect_ratio_ties_to_the_earlier_bucket():
    buckets = [(448, 448), (336, 588), (588, 336)]
    assert pipeline.video_bucket_of([(720, 1280), (1080, 1920), (480, 480)], buckets) == 1  # 2 wide, 1 square
    assert pipeline.video_bucket_of([(720, 1280), (1280, 720)], buckets) == 1  # a tie: the earlier
    assert pipeline.video_bucket_of([(1280, 720), (100, 100)], buckets) == 0  # a tie again
    assert pipeline.video_bucket_of([(1280, 720), None, None], buckets) == 2  # unknown sizes do not vote
    assert pipeline.video_bucket_of([None], buckets) == 0
    # |log| of the ratio of ratios: 4:3 is nearer 7:4 (|log(1.75 / 1.333)| = 0.27) than 1:1 (0.29);
    # 640 x 540 (1.185) is nearer 1:1 (0.17 against 0.39).
    assert pipeline.video_bucket_of([(480, 640)], buckets) == 1
    assert pipeline.video_bucket_of([(540, 640)], buckets) == 0


def test_video_buckets_need_a_model_that_takes_several_sizes():
    with pytest.raises(ValueError, match=r"data.video_buckets: \(56, 56\) asked of .*fixed at \(24, 24\)"):
        pipeline.resolve_spec(config("", "x", video_buckets=("56x56",)), TINY)
    qwen = resolve_model("qwen2.5-vl-tiny").interface()
    with pytest.raises(ValueError, match=r"data.video_buckets: \(56, 100\) must be positive multiples of 28"):
        pipeline.resolve_spec(config("", "x", video_buckets=("84x84", "56x100")), qwen)
    with pytest.raises(ValueError, match=r"data.video_buckets=.*\(56, 56\) and \(84, 84\) have the same aspect"):
        pipeline.resolve_spec(config("", "x", video_buckets=("56x56", "84x84")), qwen)
    with pytest.raises(ValueError, match="data.video_buckets"):
        pipeline.resolve_spec(config("", "x", video_buckets=("84",)), qwen)
    spec = pipeline.resolve_spec(config("", "x", video_buckets=("84x84", "56x112"), num_frames=4), qwen)
    assert [(v.frames.size, v.num_video_tokens) for v in spec.buckets] == [((84, 84), 18), ((56, 112), 16)]
    assert spec.frames.size == (84, 84) and spec.buckets[0].variants == ()


def test_shapes_dtypes_right_padding_and_eval_padding_rows(eval_batches):
    pipe, batches = eval_batches
    spec = pipe.spec
    b, f, (s, _), p = 3, spec.num_frames, spec.frames.size, spec.prompt_len
    assert (spec.num_video_tokens, p) == (17, 17 + 64)  # tiny preset: 4 frames x 2x2 + 1 newline
    assert len(batches) == 5  # 13 records, B = 3: the last batch has 2 zero-weight rows
    for batch in batches:
        r = batch["chosen_ids"].shape[1]
        expect = {"frames": ((b, f, s, s, 3), np.uint8), "prompt_ids": ((b, p), np.int32),
                  "prompt_mask": ((b, p), np.int32), "prompt_lengths": ((b,), np.int32),
                  "chosen_ids": ((b, r), np.int32), "chosen_mask": ((b, r), np.int32),
                  "rejected_ids": ((b, r), np.int32), "rejected_mask": ((b, r), np.int32),
                  "pair_weight": ((b,), np.float32), "record_index": ((b,), np.int32)}
        assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expect
        lengths = batch["prompt_lengths"]
        # Right padding: ones then zeros; pad id beyond; exactly N placeholders per row.
        np.testing.assert_array_equal(batch["prompt_mask"], np.arange(p)[None] < lengths[:, None])
        assert np.all(batch["prompt_ids"][batch["prompt_mask"] == 0] == pipeline.PAD_ID)
        placeholders = np.sum(batch["prompt_ids"] == spec.video_token_index, axis=1)
        assert np.all(placeholders == spec.num_video_tokens)
        for name in ("chosen", "rejected"):
            mask = batch[f"{name}_mask"]
            np.testing.assert_array_equal(mask, np.arange(r)[None] < mask.sum(1)[:, None])
            assert np.all(mask.sum(1) >= 1)  # padding rows too: finite losses
            assert np.all(batch[f"{name}_ids"] < 151936)
    weights = np.concatenate([x["pair_weight"] for x in batches])
    np.testing.assert_array_equal(weights, [1.0] * 13 + [0.0] * 2)
    index = np.concatenate([x["record_index"] for x in batches])
    np.testing.assert_array_equal(index, list(range(13)) + [-1, -1])
    real = batches[0]["frames"][0]
    assert real.std() > 0 and not np.any(batches[-1]["frames"][2])  # decoded vs. zero padding
    assert pipe.stats() == {"records": 13, "steps": 5, "steps_done": 5, "ok": 13, "skipped": {},
                            "padding_rows": 2, "dropped_remainder": 0, "truncated_responses": 1,
                            "steps_per_video_size": {"24x24": 5}}


def test_bucket_is_the_smallest_that_fits_and_long_responses_are_truncated(eval_batches):
    pipe, batches = eval_batches
    seen = []
    for step, batch in enumerate(batches):
        longest = max(batch["chosen_mask"].sum(1).max(), batch["rejected_mask"].sum(1).max())
        r = batch["chosen_ids"].shape[1]
        assert r == min(x for x in (16, 32, 64) if x >= longest) == pipe.step_bucket(step)
        seen.append(r)
    assert set(seen) == {16, 32, 64}
    assert max(int(x["chosen_mask"].sum(1).max()) for x in batches) == 64  # 90 words cut at 64


def test_jitted_step_compiles_once_per_bucket(data):
    traces = Counter()

    @jax.jit
    def fake_step(batch):  # stands in for the train step: consumes every array
        traces[(batch["prompt_ids"].shape[1], batch["chosen_ids"].shape[1])] += 1
        frames = batch["frames"].astype(jnp.float32) / 255.0
        tokens = sum(jnp.sum(batch[k] * batch[k.replace("ids", "mask")])
                     for k in ("prompt_ids", "chosen_ids", "rejected_ids"))
        return frames.mean() * batch["pair_weight"].sum() + tokens.astype(jnp.float32)

    shapes = []
    with make(config(data, "lengths.jsonl", batch_size=2, num_epochs=3), train=True) as pipe:
        for batch in pipe:
            fake_step(batch).block_until_ready()
            shapes.append((batch["prompt_ids"].shape[1], batch["chosen_ids"].shape[1]))
    assert len(shapes) == 19 and len(set(shapes)) >= 2
    assert traces == Counter({shape: 1 for shape in set(shapes)})


def test_every_bad_kind_is_skipped_counted_and_listed(data, tmp_path):
    with make(config(data, "bad.jsonl", batch_size=4), train=False, workdir=str(tmp_path)) as pipe:
        batches = collect(pipe)
        stats = pipe.stats()
    expected = Counter(BAD_KINDS.values())
    assert stats["skipped"] == dict(expected)
    # Accounting identity: every non-blank line is either batched or reported.
    assert stats["records"] == GOOD + len(BAD_KINDS) == stats["ok"] + sum(stats["skipped"].values())
    with open(tmp_path / pipeline.SKIPPED_FILENAME) as f:
        listed = [json.loads(line) for line in f]
    assert Counter(x["reason"] for x in listed) == expected
    path = os.path.join(data, "bad.jsonl")
    lines = {int(x["source"].rsplit(":", 1)[1]) for x in listed}
    assert all(x["source"].startswith(path + ":") for x in listed)
    ids = {x["id"] for x in listed}
    named = {f"bad-{k}" for k in BAD_KINDS if k not in ("malformed_json", "duplicate_id", "prompt_too_long")}
    assert named <= ids
    batched = {int(i) for x in batches for i, w in zip(x["record_index"], x["pair_weight"]) if w > 0}
    assert len(batched) == GOOD and not lines & {i + 1 for i in batched}
    assert len(batched) + len(lines) == stats["records"]  # nothing lost, nothing counted twice
    # Holes are zero-weight rows; B stays fixed: every row is a record, a hole or eval padding.
    assert sum(int(x["pair_weight"].sum()) for x in batches) == GOOD
    assert 4 * len(batches) == stats["ok"] + sum(stats["skipped"].values()) + stats["padding_rows"]


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_error_policy_stops_at_the_bad_record_naming_it(data, tmp_path, kind):
    with open(os.path.join(data, "bad.jsonl")) as f:
        lines = [line for line in f if line.strip()]
    path = tmp_path / "one.jsonl"
    path.write_text(lines[0] + lines[GOOD + list(BAD_KINDS).index(kind)])
    cfg = config(data, "bad.jsonl", pairs=str(path), video_root=data, on_bad_record="error", batch_size=1)
    with make(cfg, train=False) as pipe:
        with pytest.raises(records.RecordError) as err:
            collect(pipe)
        assert pipe.stats()["ok"] == 1  # the good first record came through
    assert err.value.bad.reason == BAD_KINDS[kind]
    assert f"{path}:2" in str(err.value) and "Fix:" in str(err.value)
    if kind not in ("malformed_json",):
        assert err.value.bad.id is not None and repr(err.value.bad.id) in str(err.value)


def test_training_drops_the_remainder_and_accounts_for_it(data):
    with make(config(data, "bad.jsonl", batch_size=4, num_epochs=2), train=True) as pipe:
        batches = collect(pipe)
        stats = pipe.stats()
    assert stats["records"] == 2 * (GOOD + len(BAD_KINDS)) and len(batches) == stats["records"] // 4
    assert stats["dropped_remainder"] == stats["records"] % 4
    assert stats["records"] == stats["ok"] + sum(stats["skipped"].values()) + stats["dropped_remainder"]
    assert stats["padding_rows"] == 0
    orders = [np.concatenate([x["record_index"] for x in batches[i * 5:(i + 1) * 5]]) for i in (0, 1)]
    assert not np.array_equal(orders[0], orders[1])  # a new permutation each epoch


def test_resume_gives_identical_batches_and_keeps_skip_counts(data, tmp_path):
    cfg = config(data, "bad.jsonl", batch_size=2, num_epochs=2, shuffle_seed=3)
    with make(cfg, train=True, workdir=str(tmp_path)) as pipe:
        head = collect(pipe, 4)
        state = json.loads(json.dumps(pipe.get_state()))
        tail = collect(pipe)
        final = pipe.get_state()
    assert state["next_step"] == 4 and sum(state["skipped"].values()) > 0
    log = (tmp_path / pipeline.SKIPPED_FILENAME).read_text()
    with make(cfg, train=True, workdir=str(tmp_path)) as resumed:
        resumed.set_state(state)
        assert resumed.get_state() == state
        assert_same_batches(collect(resumed), tail)
        assert resumed.get_state() == final
    # Entries from the restored steps on were removed and written again: no duplicates.
    assert (tmp_path / pipeline.SKIPPED_FILENAME).read_text() == log
    with make(cfg, train=True) as other:
        with pytest.raises(ValueError, match="does not match"):
            other.set_state({**state, "fingerprint": {**state["fingerprint"], "batch_size": 3}})
    assert len(head) == 4


def test_two_simulated_hosts_pick_the_same_bucket_from_the_global_window(data):
    # No shuffle: window k = lines 4k..4k+3; host 0 gets 4k, 4k+1 and host 1 gets 4k+2, 4k+3.
    cfg = config(data, "lengths.jsonl", batch_size=2)
    hosts = [make(cfg, train=False, process_index=h, process_count=2) for h in (0, 1)]
    local_would_differ = 0
    for step, (b0, b1) in enumerate(zip(*hosts)):
        r = b0["chosen_ids"].shape[1]
        assert b1["chosen_ids"].shape[1] == r == hosts[0].step_bucket(step) == hosts[1].step_bucket(step)
        window = set(range(4 * step, min(4 * step + 4, 13)))
        got = {int(i) for x in (b0, b1) for i in x["record_index"] if i >= 0}
        assert got == window
        for x in (b0, b1):
            local = max(x["chosen_mask"].sum(1).max(), x["rejected_mask"].sum(1).max())
            local_would_differ += min(v for v in (16, 32, 64) if v >= local) != r
    assert local_would_differ > 0  # the rule matters on this data
    stats = [h.stats() for h in hosts]
    assert sum(s["ok"] for s in stats) == 13 and stats[0]["steps"] == stats[1]["steps"] == 4


def test_two_workers_resume_and_worker_crash(data):
    """The one multi-worker test: 2 workers give the 0-worker batches, resume exactly, and a
    killed worker surfaces as an exception in the main process instead of a hang."""
    cfg = config(data, "bad.jsonl", batch_size=2, num_epochs=30)
    with make(cfg, train=True) as ref:
        reference = collect(ref, 8)
        ref_state = ref.get_state()
    cfg.num_workers = 2
    with make(cfg, train=True) as pipe:
        assert_same_batches(collect(pipe, 3), reference[:3])
        state = pipe.get_state()
    with make(cfg, train=True) as resumed:
        resumed.set_state(state)
        assert_same_batches(collect(resumed, 5), reference[3:])
        assert resumed.get_state() == ref_state  # skip counts included
        workers = [p for p in multiprocessing.active_children() if "grain" in p.name]
        assert len(workers) == 2
        os.kill(workers[0].pid, signal.SIGKILL)

        def hang(*_):
            raise TimeoutError("the loader hung after a worker was killed")

        previous = signal.signal(signal.SIGALRM, hang)
        signal.alarm(120)  # a hang fails the test instead of blocking CI
        try:
            with pytest.raises(RuntimeError, match="terminated unexpectedly"):
                collect(resumed)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


def test_triplets_give_answer_ids(data):
    with make(config(data, "triplets.jsonl", kind="triplets", batch_size=4), train=False) as pipe:
        (batch,) = collect(pipe)
    assert {"answer_ids", "answer_mask"} <= set(batch) and "chosen_ids" not in batch
    assert batch["answer_mask"].sum(1).min() >= 2 and batch["pair_weight"].tolist() == [1.0] * 4
    last = batch["answer_ids"][np.arange(4), batch["answer_mask"].sum(1) - 1]
    assert np.all(last == 151645)  # <|im_end|>
