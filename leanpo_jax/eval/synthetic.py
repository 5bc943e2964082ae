"""An embedded benchmark in Video-MME's row format, on the synthetic moving-shapes videos.

    info = write_synthetic_videomme(OUT_DIR, num_videos=8)
    # python -m leanpo_jax.eval --task videomme --data info["data"] --video-root info["video_root"] ...

Each video (leanpo_jax.data.synthetic) is asked three 4-option questions: how many shapes
(count), their colour and their direction of motion, the options being the true value and three
others in a seeded random order. Rows carry every Video-MME field (videoID, question_id,
duration "short", domain "Synthetic", sub_category = the question kind, task_type, question,
options ["A. …", …], answer letter), so the run exercises exactly the path a downloaded
Video-MME file takes; the videos are `<video_root>/<videoID>.mp4` as Video-MME lays them out.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from leanpo_jax.data import synthetic

KINDS = ("count", "colour", "direction")
TASK_TYPES = {"count": "Counting Problem", "colour": "Attribute Perception", "direction": "Temporal Perception"}
LETTERS = "ABCD"
DATA_FILE = "videomme_synthetic.json"


def videomme_rows(videos: Sequence[Dict], rng: np.random.Generator, kinds: Sequence[str] = KINDS) -> List[Dict]:
    """Synthetic video records (leanpo_jax.data.synthetic: id, video, attributes) -> Video-MME rows,
    one per video and kind (in that order): the true value and three others, shuffled by `rng`."""
    rows = []
    for v in videos:
        attrs, video_id = v["attributes"], os.path.splitext(os.path.basename(v["video"]))[0]
        for kind in kinds:
            truth = synthetic.attribute_word(attrs, kind)
            others = [x for x in synthetic.VALUES[kind] if x != truth]
            choices = [truth] + list(rng.choice(others, size=3, replace=False))
            order = rng.permutation(4)
            options = [choices[j] for j in order]
            rows.append({"videoID": video_id, "question_id": f"{video_id}-{kind}", "duration": "short",
                         "domain": "Synthetic", "sub_category": kind, "task_type": TASK_TYPES[kind],
                         "question": synthetic.QUESTIONS[kind],
                         "options": [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)],
                         "answer": LETTERS[options.index(truth)]})
    return rows


def write_synthetic_videomme(out_dir: str, num_videos: int, *, seed: int = 0, frames: int = 12, size: int = 64,
                             background: Optional[tuple] = None, first_video: int = 0) -> Dict:
    """Writes OUT_DIR/videos/*.mp4 and OUT_DIR/videomme_synthetic.json (3 questions per video)
    -> {"data", "video_root", "questions", "videos"}. `first_video`: the index of the first
    video in the synthetic sequence (so a held-out benchmark can skip the training videos)."""
    kwargs = {} if background is None else {"background": background}
    info = synthetic.generate(out_dir, first_video + num_videos, seed=seed, num_frames_video=frames, size=size,
                              **kwargs)
    with open(info["triplets"], encoding="utf-8") as f:
        videos = [json.loads(line) for line in f][first_video:]
    rows = videomme_rows(videos, np.random.default_rng((seed, 11)))
    path = os.path.join(out_dir, DATA_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    return {"data": path, "video_root": info["videos"], "questions": len(rows), "videos": len(videos)}
