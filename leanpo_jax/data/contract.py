"""What the data side needs from a model, as plain host-side values (no jax, picklable).

A model family (leanpo_jax.models.<family>) describes each of its models with a
`ModelInterface`; the pipeline, the tokenizer, generation and evaluation read only this, so
they never depend on a family's code:

    frames     FramePolicy: frame size (height, width), resize policy, mean/std, frame rules
    template   ChatTemplate: the chat prompt around the video placeholders and the question
    video_tokens(F)   how many placeholder ids a video of F frames occupies in the prompt
    positions  optional host-side position table of a prompt (families with M-RoPE need one)

Templates are text with the tokenizer's special tokens written out (e.g. "<|im_start|>"):
`ChatTokenizer` splits them on `template.specials`, maps each special to its single id and
encodes the text between (special-token text inside record fields stays literal text).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Tuple

RESIZE_MODES = ("direct", "shortest_edge_crop")
FPS_RULES = ("llava", "qwen")  # how data.fps_sampling picks frames (video_contract.sample_indices)


@dataclasses.dataclass(frozen=True)
class FramePolicy:
    """How decoded frames become the model's uint8 input [F, H, W, 3].

    size (H, W); resize "direct" (bicubic to H x W, SigLIP) or "shortest_edge_crop" (shortest
    edge to the crop size, then a centre crop, CLIP); mean / std: normalisation
    (x / 255 - mean) / std applied on device; frame_multiple: the frame count F must be a
    multiple of it (e.g. 2 for a temporal patch size of 2). Source limits, checked on every
    decoded frame (0 = unchecked; a breach is a counted skip, records.VIDEO_TOO_SMALL /
    ASPECT_MISMATCH, naming the record and file): min_source_side, the least height and width
    of a decoded video (Qwen-VL: 28, one patch pair); max_aspect_distortion, the largest factor
    (>= 1) by which a video's aspect ratio w / h may differ from the bucket's W / H, either way
    (a direct resize beyond it distorts the video beyond use). `fps_rule`: how `data.fps_sampling`
    picks frames for this model (video_contract.FPS_RULES: "llava" every k-th frame, "qwen"
    qwen-vl-utils' frame count). `size_multiple`: 0 = the model takes frames of `size` only; k > 0 =
    any (H, W) that are positive multiples of k (Qwen-VL: 28), so a run may fix several frame
    sizes (`data.video_buckets`, `ModelInterface.at_size`).
    """

    size: Tuple[int, int]
    resize: str = "direct"
    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    frame_multiple: int = 1
    min_source_side: int = 0
    max_aspect_distortion: float = 0.0
    fps_rule: str = "llava"
    size_multiple: int = 0

    def __post_init__(self):
        if self.fps_rule not in FPS_RULES:
            raise ValueError(f"FramePolicy.fps_rule={self.fps_rule!r}; expected one of {FPS_RULES}")
        if self.min_source_side < 0:
            raise ValueError(f"FramePolicy.min_source_side={self.min_source_side!r}; expected >= 0 (0 = unchecked)")
        if self.max_aspect_distortion != 0 and not self.max_aspect_distortion >= 1:
            raise ValueError(f"FramePolicy.max_aspect_distortion={self.max_aspect_distortion!r}; expected "
                             "0 (unchecked) or a factor >= 1")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"FramePolicy.resize={self.resize!r}; expected one of {RESIZE_MODES}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"FramePolicy.size={self.size!r}; expected (height, width) >= 1")

    def check_frames(self, num_frames: int, key: str = "data.num_frames") -> None:
        if int(num_frames) < 1 or int(num_frames) % self.frame_multiple:
            raise ValueError(f"config {key}={num_frames!r}: this model needs a frame count that is a "
                             f"positive multiple of {self.frame_multiple}")


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """One user turn with a video and the assistant's reply, as template text.

    prompt = bos? ‖ system.format(system=...) (omitted when the system prompt is None)
             ‖ user_head ‖ [before_video ‖ video placeholders ‖ after_video ‖ question]
                                                                         (video_first)
                           or [question ‖ before_video ‖ video placeholders]
    (before_video / after_video appear only when there is a video: Qwen-VL's
    <|vision_start|> / <|vision_end|>.)
             ‖ user_tail
    response = response_prefix ‖ text ‖ response_end (the end-of-turn token, part of the labels)
    `specials`: tokens written out in the template text that must be single ids. `bos`: a
    single id put first, as a tokenizer's post-processor adds it (text after it starts the
    string). `response_prefix`: text before every response (e.g. the space after vicuna's
    "ASSISTANT:"; decoding drops it again: decoders strip the leading space, callers .strip()).
    """

    system: str
    user_head: str
    after_video: str
    user_tail: str
    response_end: str
    specials: Tuple[str, ...]
    default_system_prompt: Optional[str] = None
    bos: Optional[str] = None
    video_first: bool = True
    before_video: str = ""
    response_prefix: str = ""

    def __post_init__(self):
        if self.response_end not in self.specials:
            raise ValueError(f"ChatTemplate.response_end={self.response_end!r} must be one of its "
                             f"specials {self.specials}")


@dataclasses.dataclass(frozen=True)
class ModelInterface:
    """A model as the data side sees it (see the module docstring).

    `video_token_index` is None for a text-only model (then `frames` is None too);
    `video_token`: the placeholder's text in the model's own tokenizer (checked against a
    checkpoint's tokenizer; ids are always inserted directly). `tokenizer`: the default
    tokenizer folder (a checkpoint's own, or the preset's), None = none known.
    `video_tokens_fn(num_frames) -> int` and `positions_fn(prompt_ids, sampled_fps=None) -> int32
    [..., P]` are picklable callables (module-level functions / partials), `positions_fn` None =
    0..P-1; `sampled_fps`: frames per second of the prompt's video as sampled
    (`VideoInfo.sampled_fps`; None = unknown, the family's default: Qwen2.5-VL's time axis).
    `source`: where the description came from (a checkpoint folder or "preset NAME"), for errors.
    """

    family: str
    vocab_size: int
    video_token_index: Optional[int]
    frames: Optional[FramePolicy]
    template: ChatTemplate
    video_tokens_fn: Optional[Callable[[int], int]] = None
    video_token: Optional[str] = None
    tokenizer: Optional[str] = None
    positions_fn: Optional[Callable] = None
    source: str = ""

    @property
    def has_video(self) -> bool:
        return self.video_token_index is not None

    def video_tokens(self, num_frames: int) -> int:
        """Placeholder ids of one video of `num_frames` frames (0 for a text-only model)."""
        if not self.has_video:
            return 0
        self.frames.check_frames(num_frames)
        return int(self.video_tokens_fn(int(num_frames)))

    def at_size(self, size, key: str = "data.video_buckets") -> "ModelInterface":
        """This interface for frames of `size` (H, W), a video bucket: the frame policy, the
        video-token count and the position table of that size (the family's callables take a
        `size=` keyword when its FramePolicy has a `size_multiple`). A model with one fixed
        frame size, or a size that is no positive multiple of it, is a ValueError naming `key`."""
        policy = self.frames
        try:
            h, w = (int(x) for x in size)
        except (TypeError, ValueError):
            raise ValueError(f"config {key}: {size!r} is not a (height, width) pair") from None
        if policy is None or (h, w) == tuple(policy.size):
            return self
        k = policy.size_multiple
        if not k:
            raise ValueError(f"config {key}: {(h, w)} asked of {self.source or self.family}, whose frames are "
                             f"fixed at {tuple(policy.size)} (its family takes one frame size); drop {key}")
        if h % k or w % k or h < k or w < k:
            raise ValueError(f"config {key}: {(h, w)} must be positive multiples of {k} for "
                             f"{self.source or self.family} (e.g. {(h // k or 1) * k, (w // k or 1) * k})")
        positions = self.positions_fn
        return self.replace(
            frames=dataclasses.replace(policy, size=(h, w)),
            video_tokens_fn=functools.partial(self.video_tokens_fn, size=(h, w)),
            positions_fn=None if positions is None else functools.partial(positions, size=(h, w)))

    def prompt_positions(self, prompt_ids, sampled_fps: Optional[float] = None):
        """The prompt's position table (positions_fn), or None for a family without one."""
        if self.positions_fn is None:
            return None
        return self.positions_fn(prompt_ids, sampled_fps)

    def replace(self, **changes) -> "ModelInterface":
        return dataclasses.replace(self, **changes)
