"""What a run records about itself: demo status, peak memory, run.json."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

from snowflake_tools import files


def peak_memory_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes there, KiB here


def demo_reason(weights_mode: str | None, image_dir: str | os.PathLike) -> str:
    """Why this run is a demo ("" when it is not): random weights, synthetic crystals, or both.

    ``weights_mode`` is what ``features.load_vgg16`` returned, or None before any model is
    loaded (then only the images are judged).
    """
    reasons = []
    if weights_mode is not None:
        from snowflake_tools import features  # here, so notebook 01 does not load TensorFlow

        if weights_mode == features.RANDOM:
            reasons.append("random VGG16 weights")
    manifest = files.read_manifest(image_dir)
    if len(manifest) and manifest["url"].astype(str).str.startswith(files.DEMO_PAGE).any():
        reasons.append("synthetic demo crystals")
    return " and ".join(reasons)


def write_run_json(path: str | os.PathLike, record: dict) -> Path:
    """Write ``record`` as pretty JSON, atomically, and return the path."""
    return files.atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
