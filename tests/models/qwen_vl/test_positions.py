"""The host-side M-RoPE table of Qwen-VL prompts (leanpo_jax.models.qwen_vl.positions) against
hand-computed tables (transformers 4.x / vLLM get_rope_index semantics), plus one comparison
with transformers' Qwen2VLModel.get_rope_index where 5.x still agrees with 4.x (text, then a
video); after a video 5.x resumes at s + max(h, w) // 2, so those columns are pinned by hand.
"""

import dataclasses
import pickle

import numpy as np
import pytest

from leanpo_jax.models.qwen_vl.config import PRESETS, num_video_tokens
from leanpo_jax.models.qwen_vl.positions import next_position, positions_fn, rope_positions

Q2 = PRESETS["qwen2-vl-tiny"]  # 4 frames at 56 px: LLM grid (2, 2, 2), 8 tokens
Q2_T3 = dataclasses.replace(Q2, num_frames=6)  # grid (3, 2, 2), 12 tokens
# Qwen2.5: 6 frames at 56 px: grid (3, 2, 2); tokens_per_second 2 x second_per_grid_t 1 = 2.
Q25 = dataclasses.replace(PRESETS["qwen2.5-vl-tiny"], num_frames=6, video_size=(56, 56))
T, VS, VE, PAD = 11, Q2.vision_start_token_id, Q2.vision_end_token_id, Q2.video_token_id


def prompt(*parts):
    """Ids from parts: an int n = n text tokens, "V"/"V12" = vision_start + a pad run of 8/12."""
    ids = []
    for p in parts:
        if isinstance(p, int):
            ids += [T] * p
        else:
            ids += [VS] + [PAD] * (int(p[1:]) if len(p) > 1 else 8)
    return np.asarray(ids, np.int32)


def ids_with_end(*parts):
    """Like `prompt`, but every video is closed by vision_end."""
    out = []
    for p in parts:
        out.append(prompt(p))
        if isinstance(p, str):
            out.append(np.asarray([VE], np.int32))
    return np.concatenate(out)


def test_text_video_text_qwen2():
    """2 text, vision_start, a 2 x (2 x 2) video, vision_end, 3 text: the block starts at 3;
    t steps per temporal patch, h per row, w per column; text resumes at max (4) + 1."""
    got = rope_positions(ids_with_end(2, "V", 3), Q2)
    want = [[0, 1, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 6, 7, 8],
            [0, 1, 2, 3, 3, 4, 4, 3, 3, 4, 4, 5, 6, 7, 8],
            [0, 1, 2, 3, 4, 3, 4, 3, 4, 3, 4, 5, 6, 7, 8]]
    assert got.dtype == np.int32 and got.shape == (3, 15)
    np.testing.assert_array_equal(got, want)
    assert next_position(got) == 9


def test_two_videos():
    """text, [VS 8 pads VE], [VS 8 pads VE], text: the second block starts at max + 1 = 6."""
    got = rope_positions(ids_with_end(1, "V", "V", 1), Q2)
    want = [[0, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 9],
            [0, 1, 2, 2, 3, 3, 2, 2, 3, 3, 4, 5, 6, 6, 7, 7, 6, 6, 7, 7, 8, 9],
            [0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 8, 9]]
    np.testing.assert_array_equal(got, want)
    assert next_position(got) == 10


def test_text_after_a_long_video_resumes_past_its_time_axis():
    """3 temporal patches on a 2 x 2 grid: t reaches s + 2 = 3, so text resumes at 4 (4.x),
    not at s + max(h, w) = 3 (transformers >= 5.3)."""
    got = rope_positions(prompt("V12", 1), Q2_T3)
    want = [[0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4],
            [0, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2, 4],
            [0, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 4]]
    np.testing.assert_array_equal(got, want)
    assert next_position(got) == 5


@pytest.mark.parametrize("sec,t_axis,resume", [
    (None, [2] * 4 + [4] * 4 + [6] * 4, 7),  # interval 2 x 1 = 2: t = 2 + 2i
    (0.25, [2] * 8 + [3] * 4, 4),  # interval 2 x 0.25 = 0.5: t = 2 + floor(0.5 i) = 2, 2, 3
])
def test_qwen25_time_interval(sec, t_axis, resume):
    """Qwen2.5-VL: text, [VS 12 pads VE], text; t = s + floor(i * tokens_per_second * sec)."""
    got = rope_positions(ids_with_end(1, "V12", 1), Q25, second_per_grid_t=sec)
    hw = [2, 2, 3, 3] * 3, [2, 3, 2, 3] * 3
    want = np.stack([[0, 1] + t_axis, [0, 1] + hw[0], [0, 1] + hw[1]])
    want = np.concatenate([want, np.full((3, 2), [resume, resume + 1])], axis=1)
    np.testing.assert_array_equal(got, want)
    assert next_position(got) == resume + 2


def test_qwen2_ignores_the_time_interval():
    """Qwen2-VL's time step is 1 whatever second_per_grid_t is."""
    ids = prompt("V12")
    np.testing.assert_array_equal(rope_positions(ids, Q2_T3, second_per_grid_t=3.0), rope_positions(ids, Q2_T3))


def test_text_only_and_wrong_pad_runs():
    np.testing.assert_array_equal(rope_positions(np.full(4, T), Q2), np.tile(np.arange(4), (3, 1)))
    assert next_position(np.zeros((3, 0), np.int32)) == 0
    for n in (7, 6):  # no whole number of 4-token temporal patches (2 x 2 merged 4 x 4 patches)
        with pytest.raises(ValueError, match=f"a run of {n} video placeholder ids.* each is 4 tokens"):
            rope_positions(np.asarray([T, VS] + [PAD] * n + [VE]), Q2)
    # The run's length gives its frames: 12 tokens = 3 temporal patches (6 frames), t = 2, 3, 4.
    table = rope_positions(np.asarray([T, VS] + [PAD] * 12 + [VE]), Q2)
    np.testing.assert_array_equal(table[0, 2:14], np.repeat([2, 3, 4], 4))
    assert next_position(table) == 6
    with pytest.raises(ValueError, match="image placeholder"):
        rope_positions(np.asarray([T, Q2.image_token_id]), Q2)


def test_positions_fn_is_picklable_and_probes_as_three_axes():
    """The data contract: batching probes positions_fn(np.zeros(1)) and reads [3, 1]."""
    fn = pickle.loads(pickle.dumps(positions_fn(Q25, second_per_grid_t=0.25)))
    np.testing.assert_array_equal(fn(np.zeros(1, np.int32)), [[0], [0], [0]])
    ids = ids_with_end(1, "V12", 1)
    np.testing.assert_array_equal(fn(ids), rope_positions(ids, Q25, second_per_grid_t=0.25))
    assert num_video_tokens(Q25) == 12
    # A record's sampled fps overrides the fixed value: 8 fps -> 2 / 8 = 0.25 s per temporal patch.
    np.testing.assert_array_equal(positions_fn(Q25)(ids, 8.0), fn(ids))
    np.testing.assert_array_equal(positions_fn(Q25)(ids, None), rope_positions(ids, Q25))
    with pytest.raises(ValueError, match="sampled_fps=0.0"):
        positions_fn(Q25)(ids, 0.0)


def test_matches_transformers_get_rope_index_up_to_the_video_end():
    """transformers' Qwen2VLModel.get_rope_index on text + VS + a (3, 4, 4) video: 5.x and 4.x
    agree there; the columns after the video are pinned above (5.x resumes earlier)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen2VLConfig(
        text_config=dict(vocab_size=1000, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]}),
        vision_config=dict(depth=1, embed_dim=16, hidden_size=16, num_heads=2, spatial_merge_size=2))
    with torch.device("meta"):  # get_rope_index reads only the config: no weights needed
        model = transformers.Qwen2VLModel(cfg)
    ids = ids_with_end(3, "V12", 2)
    kinds = (ids == PAD).astype(np.int64) * 2  # mm_token_type_ids: 2 = video
    ref, _ = model.get_rope_index(torch.from_numpy(ids[None]).long(), torch.from_numpy(kinds[None]),
                                  video_grid_thw=torch.tensor([[3, 4, 4]]))
    ref = ref[:, 0].numpy()
    got = rope_positions(ids, Q2_T3)
    end = 4 + 12  # 3 text, vision_start, 12 pads
    np.testing.assert_array_equal(got[:, :end], ref[:, :end])
    print(f"after the video: ours {got[0, end:].tolist()}, transformers {ref[0, end:].tolist()}")
