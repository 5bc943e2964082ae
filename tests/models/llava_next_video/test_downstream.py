"""LLaVA-NeXT-Video downstream at tiny size, through code that names no family: the data
pipeline (CLIP's shortest-edge resize + centre crop, vicuna_v1 ids), the shared-prefix step ==
naive, scoring, self-generation (the family's decoding defaults, </s> as the stop id), the
trainer with an exact resume, and the benchmarks' generate / data rows.

No Llama tokenizer ships offline: every run names the look-alike of tests/llama_tokenizer.py
(ids as LLaVA-NeXT-Video's: <s> 1, </s> 2, <video> 32000, <image> 32001) as data.tokenizer.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from conftest import cut_back_run, first_triplets, run_cli, saved_arrays
from llama_tokenizer import BOS, EOS, write_llama_tokenizer

from leanpo_jax.data import synthetic, video
from leanpo_jax.data.batch import pad_rows
from leanpo_jax.data.config import data_config
from leanpo_jax.data.pipeline import DataPipeline
from leanpo_jax.generate import self_generate
from leanpo_jax.generate.config import generate_config
from leanpo_jax.models import build_model, load_hf, resolve_model, scoring
from leanpo_jax.models.llava_next_video.config import CLIP_MEAN, CLIP_STD
from leanpo_jax.train import state as state_lib
from leanpo_jax.train import step as step_lib
from leanpo_jax.train.config import training_config
from leanpo_jax.train.metrics_log import read_metrics

PRESET = "llava-next-video-tiny"
SOURCE = resolve_model(PRESET)
INTERFACE, CONFIG = SOURCE.interface(), SOURCE.config
FRAMES = 4
N_VIDEO = 16  # 4 frames x (4 x 4 patches pooled 2 x 2)
VIDEO_ID, IMAGE_ID = 32000, 32001
QWEN_IDS = (151643, 151644, 151645)  # <|endoftext|>, <|im_start|>, <|im_end|>: never in this family's ids
WIDE = {"id": "wide", "video": "wide", "prompt": "Which way does the circle move?",
        "chosen": "A red circle moves left.", "rejected": "It is blue."}


# ------------------------------------------------------------- a float64 reference of the frames
def _bicubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of PIL's antialiased bicubic (a = -0.5, support 2 x the scale when
    downsampling, window cut and renormalised at the borders), in float64."""
    scale = n_in / n_out
    filter_scale = max(scale, 1.0)
    support = 2.0 * filter_scale
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        w = _bicubic((np.arange(lo, hi) - center + 0.5) / filter_scale)
        m[i, lo:hi] = w / w.sum()
    return m


def shortest_edge_crop_reference(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, h, w, 3] -> [N, size, size, 3]: shorter side to `size`, the longer to
    int(size * long / short), bicubic (horizontal pass, then vertical, each rounded to uint8
    as PIL does), then the centre crop at ((h' - size) // 2, (w' - size) // 2)."""
    _, h, w, _ = frames.shape
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    x = frames.astype(np.float64)
    if new_w != w:  # [n, h, c, w] @ [w, w'] -> [n, h, w', c]
        x = np.clip(np.floor(x.transpose(0, 1, 3, 2) @ _resample_matrix(w, new_w).T + 0.5), 0, 255)
        x = x.transpose(0, 1, 3, 2)
    if new_h != h:  # [n, w', c, h] @ [h, h'] -> [n, h', w', c]
        x = np.clip(np.floor(x.transpose(0, 2, 3, 1) @ _resample_matrix(h, new_h).T + 0.5), 0, 255)
        x = x.transpose(0, 3, 1, 2)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[:, top:top + size, left:left + size].astype(np.uint8)


def _noisy_frames(shape_hw, num, seed):
    """Rendered moving shapes at shape_hw (non-square) plus pixel noise: every filter tap shows."""
    h, w = shape_hw
    drawn = synthetic.render_frames(synthetic.sample_attributes(seed, 0), max(h, w), num)
    top, left = (max(h, w) - h) // 2, (max(h, w) - w) // 2
    noise = np.random.default_rng(seed).integers(-40, 41, (num, h, w, 3))
    return np.clip(drawn[:, top:top + h, left:left + w].astype(int) + noise, 0, 255).astype(np.uint8)


def _save_folder(folder, frames):
    os.makedirs(folder)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(os.path.join(folder, f"{i}.png"))


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return write_llama_tokenizer(str(tmp_path_factory.mktemp("llama_tokenizer")))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """3 synthetic mp4 records + "wide": a 60 x 100 frame folder (4 PNGs, lossless), and a
    360 x 640 folder "hd" for the 7B preset's 336 px policy."""
    root = str(tmp_path_factory.mktemp("next_video_corpus"))
    info = synthetic.generate(root, 3, seed=0, num_frames_video=8, size=32)
    wide = _noisy_frames((60, 100), FRAMES, seed=1)
    _save_folder(os.path.join(root, "wide"), wide)
    hd = _noisy_frames((360, 640), 2, seed=2)
    _save_folder(os.path.join(root, "hd"), hd)
    pairs = os.path.join(root, "pairs_all.jsonl")
    with open(info["pairs"]) as f, open(pairs, "w") as out:
        out.write(f.read() + json.dumps(WIDE) + "\n")
    return dict(root=root, pairs=pairs, triplets=info["triplets"], wide=wide, hd=hd)


def data_block(corpus, tokenizer_dir):
    data = data_config()
    data.pairs, data.tokenizer, data.num_frames, data.batch_size = corpus["pairs"], tokenizer_dir, FRAMES, 2
    # The vicuna system prompt is long: 64 text tokens (configs/tiny.py's 48 is OneVision's).
    data.max_prompt_text_tokens = 64
    data.response_buckets, data.max_response_tokens = (64,), 64  # one batch shape: one compile
    return data


@pytest.fixture(scope="module")
def pipeline_out(corpus, tokenizer_dir):
    """(eval batches of all 4 records, the pipeline's tokenizer, its stats)."""
    with DataPipeline(data_block(corpus, tokenizer_dir), model=INTERFACE, train=False, process_index=0,
                      process_count=1) as pipe:
        batches = [{k: np.array(v) for k, v in b.items()} for b in pipe]
        return batches, pipe.tokenizer, pipe.stats()


@pytest.fixture(scope="module")
def wide_batch(pipeline_out):
    """(the batch holding the "wide" record, its row)."""
    batches, _, _ = pipeline_out
    for batch in batches:
        rows = np.nonzero(batch["record_index"] == 3)[0]
        if rows.size:
            return batch, int(rows[0])
    raise AssertionError("the wide record is in no batch")


@pytest.fixture(scope="module")
def model():
    return build_model(CONFIG, seed=0)


# ---------------------------------------------------------------------------------------- data
def test_pipeline_frames_are_clip_shortest_edge_and_centre_crop(corpus, wide_batch):
    assert INTERFACE.frames.resize == "shortest_edge_crop" and INTERFACE.frames.size == (32, 32)
    assert INTERFACE.frames.mean == CLIP_MEAN and INTERFACE.frames.std == CLIP_STD
    batch, row = wide_batch
    got = batch["frames"][row]
    assert got.dtype == np.uint8 and got.shape == (FRAMES, 32, 32, 3)
    want = shortest_edge_crop_reference(corpus["wide"], 32)  # 60 x 100 -> 32 x 53, columns 10..41
    diff = np.abs(got.astype(int) - want.astype(int))
    print(f"pipeline vs float64 reference: max |diff| {diff.max()}, equal {np.mean(diff == 0):.4f}")
    assert diff.max() <= 1 and np.mean(diff == 0) >= 0.99
    # A plain resize to 32 x 32 (no aspect kept, no crop) is something else entirely.
    direct = video.resize_frames(corpus["wide"], 32, resize="direct")
    assert np.abs(direct.astype(int) - want.astype(int)).mean() > 10


def test_7b_preset_frames_at_336_with_the_crop(corpus):
    interface = resolve_model("llava-next-video-7b").interface()
    policy = interface.frames
    assert policy.size == (336, 336) and policy.resize == "shortest_edge_crop"
    assert interface.video_tokens(16) == 16 * 144
    frames, _ = video.read_video(os.path.join(corpus["root"], "hd"), 2, image_size=policy.size,
                                 resize=policy.resize)
    want = shortest_edge_crop_reference(corpus["hd"], 336)  # 360 x 640 -> 336 x 597, columns 130..465
    diff = np.abs(frames.astype(int) - want.astype(int))
    assert frames.shape == (2, 336, 336, 3) and diff.max() <= 1 and np.mean(diff == 0) >= 0.99


def test_pipeline_ids_are_vicuna_v1_with_one_bos_and_eos_ending_the_responses(pipeline_out):
    batches, tok, stats = pipeline_out
    assert stats["ok"] == 4 and not stats["skipped"]
    assert tok.end_id == EOS and tok.specials == {"<s>": BOS, "</s>": EOS}
    for batch in batches:
        for b in range(batch["prompt_ids"].shape[0]):
            n = int(batch["prompt_lengths"][b])
            prompt = batch["prompt_ids"][b, :n]
            assert prompt[0] == BOS and np.sum(prompt == BOS) == 1
            video_at = np.nonzero(prompt == VIDEO_ID)[0]
            assert video_at.size == N_VIDEO and np.all(np.diff(video_at) == 1)  # one contiguous run
            text = tok.tokenizer.decode(prompt[prompt != VIDEO_ID].tolist(), skip_special_tokens=True)
            assert text.startswith("A chat between") and text.rstrip().endswith("ASSISTANT:")
            for name in ("chosen", "rejected"):
                count = int(batch[f"{name}_mask"][b].sum())
                assert batch[f"{name}_ids"][b, count - 1] == EOS  # none is truncated (<= 41 of 64 tokens)
        ids = np.concatenate([batch[k].ravel() for k in ("prompt_ids", "chosen_ids", "rejected_ids")])
        assert not np.isin(ids, QWEN_IDS).any() and ids.max() <= IMAGE_ID and not np.any(ids == IMAGE_ID)


# ------------------------------------------------------------------------------ step and scoring
def _rel_err(got, want):
    got, want = dict(nnx.to_flat_state(got)), dict(nnx.to_flat_state(want))
    assert got.keys() == want.keys()
    return max(float(np.abs(np.asarray(got[p][...]) - np.asarray(want[p][...])).max()
                     / max(np.abs(np.asarray(want[p][...])).max(), 1e-30)) for p in want)


def _step_batch(batch, drop=("record_index",)):
    return {k: jnp.asarray(v) for k, v in batch.items() if k not in drop}


def test_shared_prefix_step_equals_naive(model, wide_batch):
    model_def, trainable, frozen = state_lib.split_model(model)
    assert {p[0] for p in dict(nnx.to_flat_state(trainable))} == {"language_model"}
    assert {p[0] for p in dict(nnx.to_flat_state(frozen))} == {"vision_tower", "connector"}
    host, _ = wide_batch
    batch = step_lib.normalize_batch(_step_batch(host), model_def.config)
    want = (host["frames"].astype(np.float32) / np.float32(255) - np.asarray(CLIP_MEAN, np.float32)) \
        / np.asarray(CLIP_STD, np.float32)
    np.testing.assert_allclose(np.asarray(batch["frames"]), want, atol=1e-6)  # CLIP's statistics

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


def _log_softmax64(logits):
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


@nnx.jit
def _forward(model, frames, ids, rows):
    """The model's plain causal forward (hidden states) of `ids` [S, T] over the videos of
    batch rows `rows`; right padding after a sequence changes nothing before it."""
    return model(ids, model.encode_video(frames)[rows])


def test_scoring_equals_a_full_forward_per_response(model, pipeline_out):
    batches, _, _ = pipeline_out
    table = scoring.score_pairs(model, [dict(b) for b in batches], num_records=4)
    batch = batches[0]
    got = jax.device_get(scoring.jitted_avg_logps()(model, _step_batch(batch, ("record_index", "pair_weight"))))
    frames = video.normalize_frames(batch["frames"], INTERFACE.frames.mean, INTERFACE.frames.std)
    cases = [(b, name) for b in range(batch["prompt_ids"].shape[0]) for name in ("chosen", "rejected")]
    seqs = []
    for b, name in cases:  # [prompt ‖ response] per case, as one model call would see it alone
        length, count = int(batch["prompt_lengths"][b]), int(batch[f"{name}_mask"][b].sum())
        seqs.append(np.concatenate([batch["prompt_ids"][b, :length], batch[f"{name}_ids"][b, :count]]))
    ids, _ = pad_rows(seqs, max(map(len, seqs)))
    hidden = np.asarray(_forward(model, jnp.asarray(frames), jnp.asarray(ids), jnp.asarray([b for b, _ in cases])))
    logp = _log_softmax64(hidden.astype(np.float64) @ np.asarray(model.lm_head_kernel(), np.float64))
    for i, (b, name) in enumerate(cases):
        length, count = int(batch["prompt_lengths"][b]), int(batch[f"{name}_mask"][b].sum())
        response = batch[f"{name}_ids"][b, :count]
        want = sum(logp[i, length - 1 + j, response[j]] for j in range(count))
        np.testing.assert_allclose(got[name][b], want, rtol=2e-5)
        np.testing.assert_allclose(got[f"{name}_avg"][b], want / count, rtol=2e-5)
        assert got[f"{name}_tokens"][b] == count
        assert table[name][batch["record_index"][b]] == pytest.approx(float(got[name][b]), rel=1e-6)
    assert not np.isnan(table["chosen"]).any()


# ----------------------------------------------------------------------------- self-generation
def generation_config(tokenizer_dir, preset=PRESET):
    """training_config(preset) + the generate block left at its defaults (decoding -1: the
    family's), shrunk: 2 records per batch, 4 new tokens."""
    config = training_config(preset)
    config.generate = generate_config()
    config.data.tokenizer = tokenizer_dir
    config.data.max_prompt_text_tokens = 64
    config.generate.batch_size, config.generate.max_new_tokens = 2, 4
    config.generate.max_prompt_text_tokens = 512  # the look-alike spells unseen words in bytes
    return config


@pytest.fixture(scope="module")
def generator(tokenizer_dir, model):
    return self_generate.SelfGenerator(generation_config(tokenizer_dir), model=model)


def test_unset_decoding_takes_the_familys_defaults(tokenizer_dir, generator):
    config = generation_config(tokenizer_dir)
    assert config.generate.winner.temperature == config.generate.winner.top_p == -1
    assert config.generate.loser.temperature == config.generate.loser.top_p == -1
    lazy = self_generate.SelfGenerator(config)  # from config.model: the model is not built yet
    nucleus = {"winner": {"temperature": 1.0, "top_p": 0.9, "top_k": 0},
               "loser": {"temperature": 1.0, "top_p": 1.0, "top_k": 0}}
    assert lazy.model is None and lazy.decoding == generator.decoding == nucleus
    # The same block on the OneVision tiny preset decodes greedily: the choice is the family's.
    ov = self_generate.SelfGenerator(generation_config("", preset="tiny"))
    assert {s: d["temperature"] for s, d in ov.decoding.items()} == {"winner": 0.0, "loser": 0.0}
    for side, sampler in (("winner", generator.winner_sampler), ("loser", generator.loser_sampler)):
        cfg = sampler.cfg
        assert (cfg.temperature, cfg.top_p) == (1.0, nucleus[side]["top_p"])
        # </s> ends a turn; <unk>, <s> and the placeholders are never emitted, nor the embedding
        # rows past the tokenizer (32002..32063).
        assert cfg.stop_ids == (EOS,) and cfg.banned_ids == (0, BOS, VIDEO_ID, IMAGE_ID)
        assert cfg.vocab_limit == IMAGE_ID + 1 and cfg.min_new_tokens == 1


def stop_forcing_state(model):
    """The model's state changed so that every next token is </s>: no layer writes into the
    residual stream (attention and MLP outputs zero), every token has one embedding, and the
    head gives that hidden state logit 50 at </s> (the other ids stay near 0)."""
    state = nnx.state(model)
    lm = state["language_model"]
    lm["layers"]["o_kernel"][...] = jnp.zeros_like(lm["layers"]["o_kernel"][...])
    lm["layers"]["down_kernel"][...] = jnp.zeros_like(lm["layers"]["down_kernel"][...])
    row = lm["embed_tokens"][...][5]
    lm["embed_tokens"][...] = jnp.broadcast_to(row, lm["embed_tokens"][...].shape)
    eps = CONFIG.text.rms_norm_eps
    hidden = row / jnp.sqrt(jnp.mean(row * row) + eps) * lm["final_norm"][...]
    lm["lm_head"][...] = lm["lm_head"][...].at[:, EOS].set(hidden * (50.0 / jnp.sum(hidden * hidden)))
    return state


def test_generation_stops_at_eos(generator, wide_batch):
    """With a model whose every next token is </s>, both samplers emit one token (the stop id
    is banned at step 0) and then stop on </s>: id 2 is the stop, not a Qwen id."""
    tok = generator.tok
    prompt = tok.prompt_ids(WIDE["prompt"], generator.n_video)
    width = generator.n_video + int(generator.g.max_prompt_text_tokens)  # the generator's own shape
    ids, mask = pad_rows([prompt, prompt], width)
    batch, row = wide_batch
    frames = batch["frames"][row]  # the pipeline's uint8 frames
    embeds = generator._video_batch([frames, frames[::-1]])
    stopper = stop_forcing_state(build_model(CONFIG, seed=0))
    for sampler in (generator.winner_sampler, generator.loser_sampler):
        own = sampler.state
        sampler.state = stopper  # same graph, other weights: the compiled functions are reused
        try:
            out = sampler.generate(ids, mask, video_embeds=embeds, seed=[11, 12])
        finally:
            sampler.state = own
        assert out.stopped.all() and (out.lengths == 1).all()
        assert (out.tokens[:, 0, 1] == EOS).all() and (out.tokens[:, 0, 2:] == 0).all()
        assert not np.isin(out.tokens[:, 0, 0], (EOS,) + sampler.cfg.banned_ids).any()


def test_self_generation_writes_scored_pairs(generator, corpus, tmp_path):
    triplets, rows = first_triplets(corpus["triplets"], tmp_path)
    output = str(tmp_path / "pairs.jsonl")
    report = generator.run(triplets, output, video_root=corpus["root"], progress=False)
    assert report["written_this_run"] == 2 and report["failed"] == 0
    got = [json.loads(line) for line in open(output)]
    assert [r["id"] for r in got] == [json.loads(r)["id"] for r in rows]
    for r in got:
        assert r["chosen"].strip() and r["rejected"].strip() and "</s>" not in r["chosen"] + r["rejected"]
        assert r["chosen_avg_logp"] < 0 and r["rejected_avg_logp"] < 0 and r["answer_avg_logp"] < 0


# ------------------------------------------------------------------------- trainer and resume
def _train(workdir, tokenizer_dir):
    """The training CLI on configs/tiny.py with the preset swapped (one CPU device)."""
    return run_cli(["-m", "leanpo_jax.train", "--config", "configs/tiny.py", "--config.logging.progress_bar=False",
                    f"--workdir={workdir}", f"--config.model.preset={PRESET}", f"--config.data.tokenizer={tokenizer_dir}",
                    "--config.data.max_prompt_text_tokens=64", "--config.num_steps=4",
                    "--config.checkpoint.every=2", "--config.checkpoint.max_to_keep=20"])


def _train_rows(workdir):
    return [r for r in read_metrics(workdir) if "kind" not in r]


def test_trainer_runs_exports_and_resumes_exactly(tmp_path, tokenizer_dir):
    """4 steps on the synthetic corpus; then a copy of that run cut back to its step-2
    checkpoint (later checkpoint, metrics rows and artifacts removed) is resumed to step 4:
    the same losses and, bit for bit, the same state."""
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    proc = _train(full, tokenizer_dir)
    assert "done at step 4" in proc.stdout
    rows = _train_rows(full)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)
    assert {"probe", "eval"} <= {r.get("kind") for r in read_metrics(full)}

    # The export is a LLaVA-NeXT-Video folder with the training tokenizer: it loads by itself.
    hf = os.path.join(full, "hf")
    exported = resolve_model(init_from=hf)
    assert exported.family.name == "llava_next_video"
    assert (exported.config.text, exported.config.vision) == (CONFIG.text, CONFIG.vision)
    assert exported.interface().tokenizer == hf and exported.interface().video_token == "<video>"
    with open(os.path.join(hf, "tokenizer.json"), "rb") as a, open(os.path.join(tokenizer_dir, "tokenizer.json"), "rb") as b:
        assert a.read() == b.read()
    embed = nnx.state(load_hf(hf), nnx.Param)["language_model"]["embed_tokens"][...]
    final = saved_arrays(full, 4)
    trained = [v for k, v in final.items() if "trainable" in k and "embed_tokens" in k]
    assert len(trained) == 1
    np.testing.assert_array_equal(np.asarray(embed), trained[0])

    cut_back_run(full, cut, 2, 4)
    resumed = _train(cut, tokenizer_dir)
    assert "resumed from step 2" in resumed.stdout + resumed.stderr and "done at step 4" in resumed.stdout
    again = _train_rows(cut)
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    for got, want in zip(again[2:], rows[2:]):
        for key in ("loss", "loss/preference", "logps/chosen", "rewards/margins"):
            assert abs(got[key] - want[key]) <= 1e-6 * max(1.0, abs(want[key])), (got["step"], key)
    after = saved_arrays(cut, 4)
    assert after.keys() == final.keys()
    for key in final:
        np.testing.assert_array_equal(after[key], final[key], err_msg=key)


# ------------------------------------------------------------------------------------- bench
def test_bench_generate_and_data_rows(tokenizer_dir):
    from leanpo_jax.bench.data_bench import DataShape, run_data
    from leanpo_jax.bench.generate_bench import GenerateShape, run_generate

    shape = GenerateShape("next-video 4f", PRESET, frames=FRAMES, prompt_text=12, batch=1, samples=2, new_tokens=3)
    rows = {r["phase"]: r for r in run_generate(shape, dtype="float32", attention=None, steps=1, warmup=0)}
    assert set(rows) == {"encode", "prefill", "decode"}
    assert rows["decode"]["decoded_tokens"] == 1 * 2 * 3 and rows["prefill"]["prompt_len"] == 12 + N_VIDEO
    assert rows["encode"]["frames_per_s"] > 0 and rows["prefill"]["tokens_per_s"] > 0
    data = DataShape("next-video 32px 4f", PRESET, videos=2, video_frames=8, num_frames=FRAMES, batch=1,
                     batches=2, workers=0, tokenizer=tokenizer_dir)
    [row] = run_data(data)
    assert row["records_per_s"] > 0 and row["frames_per_s"] == pytest.approx(FRAMES * row["records_per_s"])
