"""Frame preprocessing of a LLaVA-OneVision checkpoint: read from / written to its processor configs.

A checkpoint folder may hold `video_preprocessor_config.json` (transformers 5 video processor)
and / or `preprocessor_config.json` (the image processor); the video one wins for frames.
Fields read: `size` ({"height", "width"}: a direct resize; {"shortest_edge"} with
`do_center_crop` and `crop_size`: shortest edge then a centre crop), `image_mean`, `image_std`.
transformers' class defaults are not the checkpoints' values (LlavaOnevisionVideoProcessor
defaults to the OpenAI-CLIP mean/std; the released checkpoints use 0.5 / 0.5), so only what the
files say is taken; a missing file or field keeps the model config's values.
`write_preprocessor_configs` writes both files so that an exported folder drives
transformers' LlavaOnevisionProcessor with the statistics the model was trained with.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Tuple

VIDEO_FILE = "video_preprocessor_config.json"
IMAGE_FILE = "preprocessor_config.json"
_RESCALE = 1 / 255


def read_frame_settings(folder: str) -> Optional[dict]:
    """{"file", "size": (H, W), "resize", "mean", "std"} of the first processor config present
    (None when there is none). Fields the file lacks are None."""
    for name in (VIDEO_FILE, IMAGE_FILE):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        size, resize = _size(d, path)
        mean, std = d.get("image_mean"), d.get("image_std")
        return {"file": path, "size": size, "resize": resize,
                "mean": None if mean is None else tuple(float(x) for x in mean),
                "std": None if std is None else tuple(float(x) for x in std)}
    return None


def _size(d: dict, path: str) -> Tuple[Optional[Tuple[int, int]], str]:
    size = d.get("size") or {}
    if "height" in size and "width" in size:
        return (int(size["height"]), int(size["width"])), "direct"
    if "shortest_edge" in size:
        crop = d.get("crop_size") or {}
        if not d.get("do_center_crop") or "height" not in crop:
            raise ValueError(f"{path}: size.shortest_edge without do_center_crop / crop_size gives "
                             "frames of varying shape; a Video-LLM needs a fixed frame size")
        return (int(crop["height"]), int(crop["width"])), "shortest_edge_crop"
    return None, "direct"


def write_preprocessor_configs(out_dir: str, *, image_size: int, mean, std) -> list:
    """Writes video_preprocessor_config.json and preprocessor_config.json -> their names."""
    common = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
              "image_mean": list(mean), "image_std": list(std), "resample": 3,
              "rescale_factor": _RESCALE, "size": {"height": int(image_size), "width": int(image_size)},
              "processor_class": "LlavaOnevisionProcessor"}
    files = {VIDEO_FILE: {**common, "video_processor_type": "LlavaOnevisionVideoProcessor"},
             IMAGE_FILE: {**common, "image_processor_type": "LlavaOnevisionImageProcessor",
                          "do_pad": True, "image_grid_pinpoints": [[image_size, image_size]]}}
    for name, d in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(d, f, indent=2, sort_keys=True)
    return sorted(files)
