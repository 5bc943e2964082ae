"""A model family written in the test folder plugs into the seam without touching library code:
its own video-token count (2 per frame), its own chat template (not ChatML) and its own
position table run through the data pipeline, one shared-prefix train step and the sampler,
and the position table reaches the packed pass, the naive layout and the KV cache unchanged."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leanpo_jax.data import synthetic
from leanpo_jax.data.config import data_config
from leanpo_jax.data.contract import ChatTemplate
from leanpo_jax.data.pipeline import DataPipeline
from leanpo_jax.generate.sampler import Sampler, SamplingConfig
from leanpo_jax.models import VideoLLM, VideoLLMConfig, get_preset, registry, resolve_model
from leanpo_jax.models.llava_onevision.family import LlavaOnevisionFamily
from leanpo_jax.models.logps import normalize_batch, pair_logps
from leanpo_jax.train.state import init_state
from leanpo_jax.train.step import make_train_step

OFFSET = 3  # the toy family's positions start at 3, and each frame's 2 tokens share one
TEMPLATE = ChatTemplate(system="{system} ", user_head="USER: ", after_video="\n", user_tail=" ASSISTANT:",
                        response_end="<|endoftext|>", specials=("<|endoftext|>",),
                        default_system_prompt="A toy chat.")


@dataclasses.dataclass(frozen=True)
class ToyConfig(VideoLLMConfig):
    pass


def toy_tokens(num_frames: int) -> int:
    return 2 * num_frames


def toy_positions(video_id: int, prompt_ids, sampled_fps=None) -> np.ndarray:
    """A host-side position table (as M-RoPE families compute one): +1 per token, except that
    every second video placeholder repeats the position before it (the video's sampled fps,
    which the contract passes, does not matter here)."""
    is_video = np.asarray(prompt_ids) == video_id
    shared = is_video & (np.cumsum(is_video) % 2 == 0)
    step = np.where(shared, 0, 1)
    return (np.cumsum(step) - step[0] + OFFSET).astype(np.int32)


class ToyModel(VideoLLM):
    """LLaVA-OV's tower and decoder, but each frame's 4 pooled tokens averaged into 2."""

    def encode_video(self, frames):
        video = super().encode_video(frames)  # [B, F * 4, D] (no newline)
        b, n, d = video.shape
        return video.reshape(b, n // 4, 2, 2, d).mean(axis=3).reshape(b, n // 2, d)

    def num_video_tokens(self, num_frames=None):
        return toy_tokens(self.config.num_frames if num_frames is None else num_frames)


class ToyFamily(LlavaOnevisionFamily):
    name = "toy"
    config_type = ToyConfig
    presets = {"toy-tiny": ToyConfig(**{f.name: getattr(get_preset("tiny"), f.name)
                                        for f in dataclasses.fields(VideoLLMConfig)}).replace(newline="no_token")}

    def accepts_hf(self, config_json):
        return False

    def build(self, config, rngs):
        return ToyModel(config, rngs=rngs)

    def interface(self, config, folder=None):
        return super().interface(config, folder).replace(
            family=self.name, template=TEMPLATE, video_tokens_fn=functools.partial(toy_tokens),
            positions_fn=functools.partial(toy_positions, config.video_token_index))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    saved = list(registry.FAMILIES)
    registry.register(ToyFamily())
    source = resolve_model(preset="toy-tiny")
    root = str(tmp_path_factory.mktemp("toy"))
    info = synthetic.generate(root, 4, seed=0, num_frames_video=8, size=32)
    data = data_config()
    data.pairs, data.batch_size, data.num_frames = info["pairs"], 2, 4
    with DataPipeline(data, model=source.interface(), train=False, process_index=0, process_count=1) as pipe:
        batch = next(iter(pipe))
        tokenizer = pipe.tokenizer
    yield source, batch, tokenizer
    registry.FAMILIES[:] = saved


def test_the_pipeline_follows_the_familys_count_template_and_positions(toy):
    source, batch, tokenizer = toy
    assert source.family.name == "toy" and registry.family_of(source.config).name == "toy"
    placeholders = np.sum(batch["prompt_ids"] == source.config.video_token_index, axis=1)
    np.testing.assert_array_equal(placeholders, [8, 8])  # 2 tokens x 4 frames
    for row in range(2):
        n = int(batch["prompt_lengths"][row])
        table = batch["prompt_positions"][row, :n]
        np.testing.assert_array_equal(table, toy_positions(source.config.video_token_index, batch["prompt_ids"][row, :n]))
        assert table[0] == OFFSET and table[-1] == OFFSET + n - 1 - 4  # 4 shared video positions
        text = tokenizer.tokenizer.decode(batch["prompt_ids"][row, :n].tolist(), skip_special_tokens=False)
        assert text.startswith("A toy chat. USER: ") and text.endswith(" ASSISTANT:") and "<|im_start|>" not in text
        end = int(batch["chosen_mask"][row].sum()) - 1
        assert batch["chosen_ids"][row, end] == tokenizer.end_id == tokenizer.specials["<|endoftext|>"]


def test_a_shared_prefix_train_step_and_the_position_table(toy):
    source, batch, _ = toy
    model = source.build(seed=0)
    batch = {k: v for k, v in batch.items() if k != "record_index"}
    device = normalize_batch(jax.tree.map(jnp.asarray, batch), model.config)
    shared = pair_logps(model, device, layout="shared", chunk_size=8)
    naive = pair_logps(model, device, layout="naive", chunk_size=8)
    for name in ("chosen", "rejected"):
        np.testing.assert_allclose(shared[name], naive[name], rtol=1e-5, atol=1e-5)
    # The table is used: the same batch at positions 0..P-1 scores differently.
    plain = pair_logps(model, {k: v for k, v in device.items() if k != "prompt_positions"}, chunk_size=8)
    assert float(jnp.max(jnp.abs(plain["chosen"] - shared["chosen"]))) > 1e-4
    opt = {"learning_rate": 1e-3, "total_steps": 10, "warmup_ratio": 0.0}
    model_def, state = init_state(model, opt, 0)
    state, metrics = make_train_step(model_def, {"layout": "shared", "chunk_size": 8}, opt)(state, batch)
    assert np.isfinite(float(metrics["loss"][0])) and int(state.step) == 1


def test_the_sampler_continues_the_position_table_through_the_kv_cache(toy):
    source, batch, _ = toy
    model = source.build(seed=1)
    frames = normalize_batch({"frames": jnp.asarray(batch["frames"])}, model.config)["frames"]
    sampler = Sampler(model, SamplingConfig(max_new_tokens=3, temperature=0.0, stop_ids=(), vocab_limit=151000))
    out = sampler.generate(batch["prompt_ids"], batch["prompt_mask"], frames=frames,
                           positions=batch["prompt_positions"])
    video = model.encode_video(frames)
    for row in range(2):
        n = int(batch["prompt_lengths"][row])
        ids = np.concatenate([batch["prompt_ids"][row, :n], out.tokens[row, 0, :2]])[None]
        table = batch["prompt_positions"][row, :n]
        positions = np.concatenate([table, table.max() + 1 + np.arange(2)])[None]  # continued one per token
        hidden = model(jnp.asarray(ids), video[row:row + 1], positions=jnp.asarray(positions))
        logits = hidden[0, n - 1:] @ model.lm_head_kernel()
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # the raw model's, as sampled
        np.testing.assert_array_equal(np.argmax(logp[:, :151000], axis=-1), out.tokens[row, 0])
        picked = np.take_along_axis(np.asarray(logp), out.tokens[row, 0][:, None], axis=1)[:, 0]
        np.testing.assert_allclose(picked, out.logps[row, 0], rtol=1e-4, atol=1e-4)
