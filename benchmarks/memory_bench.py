"""Memory: streaming extraction (the project) against loading every image first (the original).

Each way runs in its own fresh process so that its peak resident memory is its own; see
``worker.py``. The images are PNG files written here, so decoding and resizing are part of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_flake_pngs(folder: Path, count: int, side: int, seed: int = 0) -> list[Path]:
    """Write ``count`` synthetic six-fold 'snowflakes' as ``side x side`` RGB PNG files.

    Smooth patterns with some noise, so they compress and decode like photos rather than like
    pure noise. Returns the paths, sorted.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    x, y = np.meshgrid(axis, axis)
    radius, angle = np.hypot(x, y), np.arctan2(y, x)
    paths = []
    for number in range(count):
        arms = np.cos(6 * angle + rng.uniform(0, np.pi)) ** 2
        reach = rng.uniform(0.4, 0.9)
        glow = np.exp(-((radius / reach) ** 2) * (2.0 - arms))
        noise = rng.normal(0.0, 0.03, (side, side)).astype(np.float32)
        tint = rng.uniform(0.7, 1.0, 3).astype(np.float32)
        pixels = np.clip((glow + noise)[..., None] * tint * 255.0, 0, 255).astype(np.uint8)
        path = folder / f"flake{number:05d}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
        paths.append(path)
    return paths


def extract_original_way(model, paths: list[Path], image_size: int) -> np.ndarray:
    """THE ORIGINAL TUTORIAL'S WAY (the baseline): load every image first, then one predict.

    All pixels sit in memory at once (``n x size x size x 3`` float32), and ``model.predict``
    collects every batch's output before joining them, so memory grows with n twice over.
    """
    from keras.applications import vgg16
    from keras.utils import img_to_array, load_img

    pixels = np.array(
        [img_to_array(load_img(path, target_size=(image_size, image_size))) for path in paths]
    )
    outputs = model.predict(vgg16.preprocess_input(pixels), verbose=0)
    return outputs.reshape(len(paths), -1)


def extract_streaming(model, paths: list[Path], batch_size: int) -> np.ndarray:
    """The project's way: ``features.extract_features``, one batch of pixels at a time."""
    from snowflake_tools import features

    return features.extract_features(model, paths, batch_size=batch_size, progress=False).features
