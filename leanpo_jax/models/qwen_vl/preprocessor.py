"""Frame statistics of a Qwen-VL checkpoint from its processor configs, and writing them back.

Qwen's processors resize each video with `smart_resize` (multiples of 28 within a pixel
budget); this family instead resizes every video directly to the run's static bucket
(`QwenVLConfig.video_size`), so only the normalisation (`image_mean` / `image_std`) and the
patch sizes are read; patch sizes that disagree with config.json are an error naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os

from leanpo_jax.models.qwen_vl.config import QwenVLConfig

VIDEO_FILE = "video_preprocessor_config.json"
IMAGE_FILE = "preprocessor_config.json"


def with_frame_settings(config: QwenVLConfig, folder: str) -> QwenVLConfig:
    for name in (VIDEO_FILE, IMAGE_FILE):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        v = config.vision
        for key, want in (("patch_size", v.patch_size), ("temporal_patch_size", v.temporal_patch_size),
                          ("merge_size", v.spatial_merge_size)):
            if key in d and int(d[key]) != want:
                raise ValueError(f"{path}: {key} {d[key]} but config.json's vision config says {want}: "
                                 "the checkpoint's files disagree")
        stats = {f"image_{k}": tuple(float(x) for x in d[f"image_{k}"]) for k in ("mean", "std")
                 if d.get(f"image_{k}") is not None}
        return config.replace(vision=dataclasses.replace(v, **stats)) if stats else config
    return config


def write_preprocessor_configs(out_dir: str, config: QwenVLConfig) -> list:
    """Writes video_preprocessor_config.json and preprocessor_config.json -> their names; the
    pixel budget is the bucket's, so transformers' processor resizes to it."""
    v = config.vision
    pixels = config.video_size[0] * config.video_size[1]
    common = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
              "image_mean": list(v.image_mean), "image_std": list(v.image_std), "rescale_factor": 1 / 255,
              "patch_size": v.patch_size, "temporal_patch_size": v.temporal_patch_size,
              "merge_size": v.spatial_merge_size, "min_pixels": pixels, "max_pixels": pixels, "resample": 3}
    processor = "Qwen2VLProcessor" if v.version == "2" else "Qwen2_5_VLProcessor"
    files = {VIDEO_FILE: {**common, "video_processor_type": "Qwen2VLVideoProcessor", "processor_class": processor},
             IMAGE_FILE: {**common, "image_processor_type": "Qwen2VLImageProcessor", "processor_class": processor}}
    for name, d in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(d, f, indent=2, sort_keys=True)
    return sorted(files)
