"""Frame preprocessing of a LLaVA-NeXT-Video checkpoint: read from / written to its processor configs.

The checkpoints' processors (built from openai/clip-vit-large-patch14-336 by the llava-hf
conversion) resize the shortest edge to 336 (bicubic), centre-crop 336 x 336 and normalise with
the OpenAI-CLIP mean/std. transformers' class defaults (224 / 224) are not what the checkpoints
use, so only the files' values are taken (llava_onevision.preprocessor.read_frame_settings reads
both file kinds); a missing file or field keeps the model config's values.
"""

from __future__ import annotations

import dataclasses
import json
import os

from leanpo_jax.models.llava_next_video.config import NextVideoConfig
from leanpo_jax.models.llava_onevision.preprocessor import IMAGE_FILE, VIDEO_FILE, read_frame_settings


def with_frame_settings(config: NextVideoConfig, folder: str) -> NextVideoConfig:
    """`config` with the folder's mean/std; a crop size other than the tower's image_size, or a
    resize without a centre crop, is an error naming the file."""
    found = read_frame_settings(folder)
    if found is None:
        return config
    v = config.vision
    if found["size"] not in (None, (v.image_size, v.image_size)):
        raise ValueError(f"{found['file']} gives frames of {found['size']} but config.json describes a "
                         f"CLIP tower that takes {v.image_size}x{v.image_size}: the checkpoint's files "
                         "disagree; fix the preprocessor config's crop_size")
    if found["size"] is not None and found["resize"] != "shortest_edge_crop":
        raise ValueError(f"{found['file']}: a direct resize; LLaVA-NeXT-Video frames are resized on the "
                         "shortest edge and centre-cropped (size.shortest_edge, do_center_crop, crop_size)")
    stats = {f"image_{k}": found[k] for k in ("mean", "std") if found[k] is not None}
    return config.replace(vision=dataclasses.replace(v, **stats)) if stats else config


def write_preprocessor_configs(out_dir: str, config: NextVideoConfig) -> list:
    """Writes video_preprocessor_config.json and preprocessor_config.json -> their names."""
    v = config.vision
    common = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
              "do_center_crop": True, "crop_size": {"height": v.image_size, "width": v.image_size},
              "size": {"shortest_edge": v.image_size}, "image_mean": list(v.image_mean),
              "image_std": list(v.image_std), "resample": 3, "rescale_factor": 1 / 255,
              "processor_class": "LlavaNextVideoProcessor"}
    files = {VIDEO_FILE: {**common, "video_processor_type": "LlavaNextVideoVideoProcessor"},
             IMAGE_FILE: {**common, "image_processor_type": "LlavaNextImageProcessor",
                          "image_grid_pinpoints": [[v.image_size, v.image_size]]}}
    for name, d in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(d, f, indent=2, sort_keys=True)
    return sorted(files)
