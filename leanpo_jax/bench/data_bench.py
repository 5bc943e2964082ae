"""Input-pipeline throughput: synthetic mp4 pairs through `data.DataPipeline` (grain, PyAV).

The videos are written first (data.synthetic, not timed); then `batches` training batches are
read after one warm-up batch (worker start and first decode excluded): records/s and frames/s
(records · frames per video). grain and av are imported here only, never on the step path.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time


@dataclasses.dataclass(frozen=True)
class DataShape:
    name: str
    preset: str  # fixes the frame size
    videos: int
    video_frames: int  # frames stored per video
    num_frames: int  # frames sampled per record
    batch: int
    batches: int
    workers: int
    # Tokenizer folder (data.tokenizer); "" = the preset's own. A family whose presets ship no
    # tokenizer (LLaVA-NeXT-Video: no Llama tokenizer offline) needs one named here.
    tokenizer: str = ""


FULL = DataShape("synthetic 384px 32f of 64", "llava-ov-qwen2-0.5b", videos=32, video_frames=64,
                 num_frames=32, batch=4, batches=16, workers=4)
TINY = DataShape("synthetic 24px 4f of 8", "tiny", videos=8, video_frames=8, num_frames=4, batch=2,
                 batches=6, workers=0)


def run_data(shape: DataShape, workdir: str = "") -> list:
    from leanpo_jax.data import synthetic
    from leanpo_jax.data.config import data_config
    from leanpo_jax.data.pipeline import DataPipeline
    from leanpo_jax.models import resolve_model

    interface = resolve_model(shape.preset).interface()
    size = max(interface.frames.size)
    with tempfile.TemporaryDirectory(dir=workdir or None) as tmp:
        info = synthetic.generate(os.path.join(tmp, "corpus"), shape.videos, seed=0,
                                  num_frames_video=shape.video_frames, size=size + size % 2)
        data = data_config()
        data.pairs, data.num_frames = info["pairs"], shape.num_frames
        data.batch_size, data.num_workers = shape.batch, shape.workers
        data.tokenizer = shape.tokenizer
        data.num_epochs = -(-(shape.batches + 1) * shape.batch // shape.videos)
        records = 0
        with DataPipeline(data, model=interface, train=True, workdir=tmp) as pipe:
            it = iter(pipe)
            t = time.perf_counter()
            next(it)
            first_s = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(shape.batches):
                batch = next(it)
                records += int((batch["pair_weight"] > 0).sum())
            seconds = time.perf_counter() - t
    return [dict(what="data", name=shape.name, layout="grain", impl="leanpo_jax", workers=shape.workers,
                 batch=shape.batch, step_s=seconds / shape.batches, compile_s=None, first_batch_s=first_s,
                 records_per_s=records / seconds, frames_per_s=records * shape.num_frames / seconds,
                 tokens_per_s=None, pairs_per_s=records / seconds, peak_bytes=None, peak_source="unavailable")]
