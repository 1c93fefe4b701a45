"""The steps notebooks 02 and 03 share: folders, the weights, the cut VGG16, the ranking.

Both notebooks start the same way: they find their folders, choose the weights (with the demo
fallback), load VGG16 cut at a layer, extract features, make sure at least two images could be
read and rank the flakes (:func:`rank_flakes`, which the precision check runs again in
float32). Each step lives here once, so the two notebooks cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import keras
import pandas as pd

from snowflake_tools import features, runinfo, search

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


def choose_weights(
    weights: str | None, image_dir: str | os.PathLike
) -> tuple[str | None, str, str]:
    """``(argument, weights_mode, demo)`` for ``WEIGHTS``, and one line saying what they are.

    ``argument`` is what ``keras.applications.VGG16`` takes (see
    :func:`features.resolve_weights`: ``"auto"`` becomes ``"imagenet"`` when the download works,
    else None, random); ``weights_mode`` goes into run.json; ``demo`` says why the run is a demo
    ("" when it is not), for stamping figures.
    """
    argument, weights_mode = features.resolve_weights(weights)
    demo = runinfo.demo_reason(weights_mode, image_dir)
    print(
        f"weights: {weights_mode}"
        + (f"; DEMO run ({demo}): figures are stamped DEMO." if demo else "")
    )
    return argument, weights_mode, demo


def load_extractor(
    weights: str | None,
    image_size: int,
    layer: str,
    image_dir: str | os.PathLike,
    precision: str = features.AUTO,
) -> tuple[keras.Model, str, str]:
    """VGG16 cut at ``layer``: ``(extractor, weights_mode, demo)``, built as in notebook 02, step 2.

    ``precision`` is the network's arithmetic (:data:`features.PRECISIONS`);
    :func:`features.precision_of` tells which one it got.
    """
    argument, weights_mode, demo = choose_weights(weights, image_dir)
    extractor = features.cut_at_layer(features.build_vgg16(argument, image_size, precision), layer)
    precision = features.precision_of(extractor)
    print(f"precision: {precision}; {layer} output shape: {extractor.output.shape}")
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


class Ranked(NamedTuple):
    """Features of every readable flake and the ranking they give (notebooks 02 and 03).

    A tuple, so ``extractor, extraction, flake_files, ranking = ranked`` unpacks it.
    """

    extractor: keras.Model
    extraction: features.Extraction
    flake_files: list[str]
    ranking: pd.DataFrame

    @property
    def precision(self) -> str:
        """The precision the features were computed in."""
        return features.precision_of(self.extractor)


def rank_flakes(
    weights: str | None,
    image_size: int,
    layer: str,
    paths: Sequence[str | os.PathLike],
    batch_size: int,
    cache_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    precision: str = features.AUTO,
) -> Ranked:
    """Notebook 02's steps 2 to 6 in one call: VGG16 cut at ``layer``, features, ranking.

    The same functions the notebook's cells call, in ``precision``; the features come from
    the cache where they are there.
    """
    extractor, _, _ = load_extractor(weights, image_size, layer, image_dir, precision)
    extraction = features.extract_features(extractor, paths, batch_size, cache_dir)
    flake_files = readable_flakes(extraction, image_dir)
    neighbours = search.nearest_distinct_neighbours(extraction.features)
    return Ranked(
        extractor, extraction, flake_files, search.rank_uniqueness(neighbours, flake_files)
    )
