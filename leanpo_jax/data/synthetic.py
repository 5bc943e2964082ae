"""Synthetic shapes dataset: real H.264 mp4 videos of moving coloured shapes + JSONL records.

    python -m leanpo_jax.data.synthetic --out DIR --num N [--seed S] [--size S] [--frames F] [--fps R]

Each video shows `count` (1-4) identical shapes (circle / square / triangle) of one colour, all
moving in one direction (left / right / up / down; "up" is towards row 0) on a dark background;
each shape travels in its own lane so shapes never overlap (a count is visible in every frame).
Video i's attributes come from `np.random.default_rng((seed, i))`, so a bigger `num` extends a
smaller one; question kinds cycle count -> colour -> direction -> shape.

Writes, with `video` paths relative to DIR (the pipeline's video_root):
  DIR/videos/shapes-000000.mp4            libx264, yuv420p, crf 15, 1 thread, mbtree=0
  DIR/triplets.jsonl  {id, video, prompt, answer, attributes}
  DIR/pairs.jsonl     {id, video, prompt, chosen, rejected, attributes}
`chosen` is the templated ground-truth answer; `rejected` is the same sentence with the asked
attribute's word replaced by a wrong value (exactly one word differs). `attributes` (extra,
ignored by the record reader) holds the ground truth: shape, colour, direction, count, question.

Determinism: same seed and arguments -> byte-identical JSONL and mp4 files, in any process
(one x264 thread, no creation time, mbtree off: see `write_mp4`), so two training runs on
"the same" generated corpus see the same pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Dict, Optional

import av
import numpy as np

from leanpo_jax.data.video import swscale_one_thread

SHAPES = ("circle", "square", "triangle")
COLOURS = {  # far apart in YUV so 4:2:0 chroma subsampling keeps them distinct
    "red": (230, 40, 40), "green": (40, 200, 70), "blue": (40, 90, 240),
    "yellow": (240, 220, 40), "white": (240, 240, 240),
}
DIRECTIONS = ("left", "right", "up", "down")
COUNTS = ("one", "two", "three", "four")
BACKGROUND = (24, 24, 32)
QUESTION_KINDS = ("count", "colour", "direction", "shape")
QUESTIONS = {
    "count": "How many shapes are in the video?",
    "colour": "What colour are the shapes in the video?",
    "direction": "In which direction do the shapes move?",
    "shape": "What shape are the objects in the video?",
}
# One template per question; the asked attribute appears as exactly one word and every other
# word is the same for every value (no plural agreement to change), so rejected differs by one.
ANSWERS = {
    "count": "The number of {colour} {shape}s in the video is {count}.",
    "colour": "Every {shape} in the video is {colour}.",
    "direction": "Every {colour} {shape} in the video moves {direction}.",
    "shape": "Every {colour} shape in the video is a {shape}.",
}
VALUES = {"count": COUNTS, "colour": tuple(COLOURS), "direction": DIRECTIONS, "shape": SHAPES}


def sample_attributes(seed: int, index: int) -> Dict:
    """Attributes of video `index`: shape, colour, direction, count (int 1-4), question kind,
    the wrong value used by `rejected`, and the per-shape lane jitter / start offsets in [0, 1)."""
    rng = np.random.default_rng((seed, index))
    attrs = {"shape": SHAPES[rng.integers(len(SHAPES))], "colour": tuple(COLOURS)[rng.integers(len(COLOURS))],
             "direction": DIRECTIONS[rng.integers(len(DIRECTIONS))], "count": int(rng.integers(1, 5)),
             "question": QUESTION_KINDS[index % len(QUESTION_KINDS)]}
    attrs["wrong"] = wrong_value(attrs, attrs["question"], rng)
    attrs["jitter"] = rng.random(attrs["count"]).round(4).tolist()
    attrs["start"] = rng.random(attrs["count"]).round(4).tolist()
    return attrs


def attribute_word(attrs: Dict, kind: str) -> str:
    """The answer word for `kind` (count as "one".."four", else the attribute itself)."""
    return COUNTS[attrs["count"] - 1] if kind == "count" else attrs[kind]


def wrong_value(attrs: Dict, kind: str, rng: np.random.Generator) -> str:
    """A value of `kind` other than the video's, drawn uniformly with one `rng` draw."""
    wrong = [v for v in VALUES[kind] if v != attribute_word(attrs, kind)]
    return wrong[rng.integers(len(wrong))]


def answer(attrs: Dict, **override) -> str:
    """The templated answer to `attrs["question"]`; `override` replaces attribute words."""
    words = {k: attribute_word(attrs, k) for k in VALUES}
    words.update(override)
    return ANSWERS[attrs["question"]].format(**words)


def render_frames(attrs: Dict, size: int = 64, num_frames: int = 24, background=BACKGROUND) -> np.ndarray:
    """The drawn frames, uint8 [num_frames, size, size, 3] (what the mp4 encodes) on an RGB
    `background`."""
    s, count = int(size), attrs["count"]
    r = max(3.0, s / 10)  # half-width of a shape
    lane = s / count
    travel = 0.4 * s  # distance each shape covers over the clip
    axis = 0 if attrs["direction"] in ("left", "right") else 1  # 0: moves along x (columns)
    sign = 1.0 if attrs["direction"] in ("right", "down") else -1.0
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    frames = np.empty((num_frames, s, s, 3), np.uint8)
    frames[:] = background
    colour = np.array(COLOURS[attrs["colour"]], np.uint8)
    for j in range(count):
        across = (j + 0.5) * lane + (attrs["jitter"][j] - 0.5) * max(0.0, lane - 2 * r - 2)
        lo = r + 1 + (travel if sign < 0 else 0.0)  # start range keeps the whole path in view
        hi = s - r - 1 - (travel if sign > 0 else 0.0)
        start = lo + attrs["start"][j] * max(0.0, hi - lo)
        for t in range(num_frames):
            along = start + sign * travel * t / max(1, num_frames - 1)
            cx, cy = (along, across) if axis == 0 else (across, along)
            frames[t][_mask(attrs["shape"], xx, yy, cx, cy, r)] = colour
    return frames


def _mask(shape: str, xx, yy, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)  # about a circle's area
    return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)  # triangle pointing up


def write_mp4(path: str, frames: np.ndarray, fps: int = 8, *, crf: int = 15, gop: Optional[int] = None,
              faststart: bool = False) -> None:
    """Writes uint8 [T, H, W, 3] (H, W even) as H.264 (libx264, yuv420p) in mp4 with PyAV.

    Same frames, same bytes, in any process: one encoder thread (independent of the core
    count), the rgb24 -> yuv420p conversion single-threaded, and x264's macroblock-tree rate
    control off. `gop` sets the keyframe interval (x264's default is 250); `faststart` puts the
    index (moov) first.
    """
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even frame sizes; got {w}x{h}: use an even --size")
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(path, "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # mbtree=0: with it (x264's default) the same frames encoded to different bytes in about
        # one fresh process in three (measured on 16 videos x 10 processes; mbtree=0 or
        # bframes=0: 20 of 20 identical), so two runs "on the same generated data" trained on
        # different pixels and could not be compared. B-frames stay (readers must reorder).
        stream.options = {"crf": str(crf), "threads": "1", "x264-params": "mbtree=0",
                          **({"g": str(gop)} if gop else {})}
        for frame in frames:
            # Converted here on one swscale thread rather than on the encoder's automatic threads.
            rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
            container.mux(stream.encode(rgb.reformat(format="yuv420p", **swscale_one_thread())))
        container.mux(stream.encode())


def generate(out_dir: str, num: int, seed: int = 0, *, num_frames_video: int = 24, size: int = 64,
             fps: int = 8, background=BACKGROUND) -> Dict:
    """Writes `num` videos and their records under `out_dir` (see the module docstring);
    `background`: the RGB backdrop (the demo uses mid grey).

    Returns {"out_dir", "num", "seed", "size", "num_frames", "fps", "videos" (folder),
    "triplets", "pairs" (paths), "questions" ({kind: count}), "seconds"}.
    """
    if num < 1:
        raise ValueError(f"num={num}: generate at least one video")
    if size < 16 or size % 2:
        raise ValueError(f"size={size}: use an even size >= 16 (H.264 yuv420p needs even sizes)")
    if num_frames_video < 2:
        raise ValueError(f"num_frames_video={num_frames_video}: motion needs >= 2 frames")
    started = time.perf_counter()
    video_dir = os.path.join(out_dir, "videos")
    os.makedirs(video_dir, exist_ok=True)
    triplets, pairs, questions = [], [], {k: 0 for k in QUESTION_KINDS}
    for i in range(num):
        attrs = sample_attributes(seed, i)
        rid = f"shapes-{i:06d}"
        video = f"videos/{rid}.mp4"
        write_mp4(os.path.join(out_dir, video), render_frames(attrs, size, num_frames_video, background), fps)
        kind = attrs["question"]
        questions[kind] += 1
        truth = {k: attrs[k] for k in ("shape", "colour", "direction", "count", "question")}
        common = {"id": rid, "video": video, "prompt": QUESTIONS[kind]}
        chosen = answer(attrs)
        triplets.append({**common, "answer": chosen, "attributes": truth})
        pairs.append({**common, "chosen": chosen, "rejected": answer(attrs, **{kind: attrs["wrong"]}),
                      "attributes": truth})
    paths = {}
    for name, rows in (("triplets", triplets), ("pairs", pairs)):
        paths[name] = os.path.join(out_dir, f"{name}.jsonl")
        with open(paths[name], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return {"out_dir": out_dir, "num": num, "seed": seed, "size": size, "num_frames": num_frames_video,
            "fps": fps, "videos": video_dir, **paths, "questions": questions,
            "seconds": round(time.perf_counter() - started, 3)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m leanpo_jax.data.synthetic",
                                description="Write a synthetic moving-shapes video dataset (mp4 + JSONL).")
    p.add_argument("--out", required=True, help="output folder (created; files are overwritten)")
    p.add_argument("--num", type=int, required=True, help="number of videos (= records per JSONL)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (even, >= 16)")
    p.add_argument("--frames", type=int, default=24, help="frames per video")
    p.add_argument("--fps", type=int, default=8)
    args = p.parse_args(argv)
    try:
        s = generate(args.out, args.num, args.seed, num_frames_video=args.frames, size=args.size,
                     fps=args.fps)
    except ValueError as e:
        p.error(str(e))
    print(f"wrote {s['num']} videos ({s['size']}x{s['size']}, {s['num_frames']} frames at {s['fps']} fps, "
          f"seed {s['seed']}) + triplets.jsonl + pairs.jsonl to {os.path.abspath(s['out_dir'])} "
          f"in {s['seconds']:.2f} s; questions {json.dumps(s['questions'])}")


if __name__ == "__main__":
    main()
