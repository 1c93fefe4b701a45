"""What a run records about itself: demo status, peak memory, run.json."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

from snowflake_tools import files, parameters

#: What notebook 02's run.json records of how it ranked the flakes: notebook 05 explains that
#: ranking with the same images, cache, weights, layer, image size and precision.
RANKED_WITH = (
    "image_dir", "cache_dir", "weights", "layer", "image_size", "precision", "near_duplicate_ratio",
)  # fmt: skip


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


def notebook_02_settings(results_dir: object) -> dict:
    """How notebook 02 ranked the flakes whose results are in ``results_dir`` (``RESULTS_DIR``
    of notebook 05): :data:`RANKED_WITH`, read from its run.json.

    A folder without such a run.json, or one ranked at a layer that is no grid of cells (a
    pooling layer), stops in one line naming ``RESULTS_DIR``.
    """
    notebook_02 = "02_most_unique_snowflake.ipynb"
    folder = parameters.folder("RESULTS_DIR", results_dir, filled_by=notebook_02)
    try:
        record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    missing = [key for key in RANKED_WITH if key not in record]
    if missing:
        raise parameters.ParameterError(
            f"RESULTS_DIR = {results_dir!r} is not allowed: it holds no run.json that says how "
            f"{notebook_02} ranked (missing: {', '.join(missing)}); run {notebook_02} with "
            "this RESULTS_DIR first."
        )
    if record["layer"] not in parameters.VGG16_CONV_LAYERS:
        raise parameters.ParameterError(
            f"RESULTS_DIR = {results_dir!r} is not allowed: notebook 02 ranked there at LAYER = "
            f"{record['layer']!r}, and cells are explained at a convolutional layer; run "
            "notebook 02 with LAYER = 'block5_conv3' (or another convolutional layer) first."
        )
    return {key: record[key] for key in RANKED_WITH}
