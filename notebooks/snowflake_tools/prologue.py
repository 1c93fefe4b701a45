"""The opening steps notebooks 02 and 03 share: folders, the cut VGG16, the readable flakes.

Both notebooks start the same way: they find their folders, load VGG16 cut at a layer (with
the demo fallback), extract features and make sure at least two images could be read. Each
step lives here once, so the two notebooks cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from snowflake_tools import features, runinfo

#: Where the feature cache goes, inside the results folder, when no cache folder is given.
CACHE_SUBFOLDER = "feature_cache"


def prepare_folders(
    image_dir: str | os.PathLike,
    results_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Path, Path, Path]:
    """``(image_dir, results_dir, cache_dir)`` as paths; the results folder is created.

    ``cache_dir`` None means ``results_dir / "feature_cache"``.
    """
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else results / CACHE_SUBFOLDER
    return Path(image_dir), results, cache


def load_extractor(
    weights: str | None,
    image_size: int,
    layer: str,
    image_dir: str | os.PathLike,
    precision: str = features.AUTO,
) -> tuple[keras.Model, str, str]:
    """VGG16 cut at ``layer``: ``(extractor, weights_mode, demo)``, and one line saying so.

    ``weights_mode`` is what :func:`features.load_vgg16` used; ``demo`` says why the run is a
    demo ("" when it is not), for stamping figures. ``precision`` is the network's arithmetic
    (:data:`features.PRECISIONS`); :func:`features.precision_of` tells which one it got.
    """
    base, weights_mode = features.load_vgg16(weights, image_size, precision=precision)
    extractor = features.cut_at_layer(base, layer)
    demo = runinfo.demo_reason(weights_mode, image_dir)
    print(
        f"weights: {weights_mode}; precision: {features.precision_of(extractor)}; "
        f"{layer} output shape: {extractor.output.shape}"
    )
    if demo:
        print(f"DEMO run ({demo}): figures are stamped DEMO.")
    return extractor, weights_mode, demo


def readable_flakes(extraction: features.Extraction, image_dir: str | os.PathLike) -> list[str]:
    """Names, relative to ``image_dir``, of the images behind the rows of ``extraction``.

    Raises ValueError when fewer than two images could be read: there is nothing to compare.
    """
    names = [Path(path).relative_to(image_dir).as_posix() for path in extraction.paths]
    if len(names) < 2:
        raise ValueError(
            f"Only {len(names)} readable image(s) in {image_dir} ({len(extraction.skipped)} "
            "could not be read): need at least 2 to compare. Run 01_download_snowflakes.ipynb "
            "again, or add images."
        )
    return names
