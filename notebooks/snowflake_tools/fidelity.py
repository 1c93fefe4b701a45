"""Is bfloat16 precise enough for this ranking? The close calls that decide (notebooks 02-04).

bfloat16 rounds every number inside the network to about 3 significant digits. Measured on
the demo set and on photo-like images (``make bench``, ``docs/performance.md``, section 3), that
moves each nearest-neighbour distance by at most 0.82 % of the median distance, so the
ranking only changes where two distances lie closer together than about twice that. A
ranking without such close calls is the float32 ranking; one with them is computed again in
float32 when ``PRECISION = "auto"`` chose bfloat16: :func:`rank_flakes` makes a ranking in one
call, so :func:`settle_precision` can run it again in float32.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, Protocol, TypeVar

import keras
import numpy as np
import pandas as pd

from snowflake_tools import features, search

#: Distances closer than this fraction of the median distance are a close call for bfloat16:
#: twice the largest change it caused in ``make bench`` (0.82 %), rounded up, because both
#: distances of a pair can move, in opposite directions.
BFLOAT16_MARGIN = 0.02

#: Columns of :func:`close_calls`.
CLOSE_CALL_COLUMNS = ["what", "file", "other", "distance", "gap_to_median"]


def close_calls(
    ranking: pd.DataFrame,
    top_n: int,
    near_duplicate_ratio: float | None = None,
    margin: float = BFLOAT16_MARGIN,
) -> pd.DataFrame:
    """Places where a change of ``margin`` × the median distance could change the answer.

    Two kinds, each listed with the gap that makes it close, as a fraction of the median:

    - ``"order"``: two neighbouring ranks among the first ``top_n + 1`` whose distances differ,
      but by less than ``margin`` × the median, so the top ``top_n`` could swap or change.
      Exact ties are not close calls: equal distances are ordered by file name in any
      precision (a mutual pair of nearest neighbours shares one distance).
    - ``"near-duplicate"``: a flake whose distance lies within ``margin`` × the median of
      the near-duplicate threshold (``near_duplicate_ratio`` × the median), so the pair could
      fall on the other side of it. Skipped when ``near_duplicate_ratio`` is None.

    Args:
        ranking: :func:`search.rank_uniqueness` output (sorted, largest distance first).
        top_n: how many of the most unique flakes must keep their order.
        near_duplicate_ratio: notebook 02's ``NEAR_DUPLICATE_RATIO``, or None.
        margin: the fraction of the median distance that counts as close.

    Returns:
        A DataFrame with columns ``what, file, other, distance, gap_to_median`` (empty when
        bfloat16 cannot change the answer).
    """
    distances = ranking["distance"].to_numpy(dtype=np.float64)
    median = np.nanmedian(distances) if np.isfinite(distances).any() else np.nan
    if not np.isfinite(median) or median <= 0:
        return pd.DataFrame(columns=CLOSE_CALL_COLUMNS)
    calls = []
    head = ranking.head(top_n + 1)
    for upper, lower in zip(head.itertuples(), head.iloc[1:].itertuples(), strict=False):
        gap = upper.distance - lower.distance  # NaN (no neighbour) compares False below
        if 0 < gap < margin * median:
            calls.append(("order", upper.file, lower.file, upper.distance, gap / median))
    if near_duplicate_ratio is not None:
        threshold = near_duplicate_ratio * median
        near = ranking[np.abs(distances - threshold) < margin * median]
        for row in near.itertuples():
            gap = abs(row.distance - threshold) / median
            calls.append(("near-duplicate", row.file, row.nearest_file, row.distance, gap))
    return pd.DataFrame(calls, columns=CLOSE_CALL_COLUMNS)


def float32_needed(precision: str, used: str, calls: pd.DataFrame) -> bool:
    """Whether the ranking must be computed again in float32, with one line saying why.

    Args:
        precision: the ``PRECISION`` asked for (``"auto"``, ``"float32"`` or ``"bfloat16"``).
        used: the precision the features were computed in (:func:`features.precision_of`).
        calls: :func:`close_calls` of the ranking made from those features.

    Only ``PRECISION = "auto"`` falls back: it promised bfloat16 only where bfloat16 gives
    float32's answer. A run that asked for ``"bfloat16"`` keeps it, with a warning.
    """
    if used != features.BFLOAT16 or len(calls) == 0:
        print(f"{len(calls)} close call(s); the ranking stands in {used}.")
        return False
    if precision != features.AUTO:
        print(
            f"Warning: {len(calls)} close call(s) that bfloat16 may order differently from "
            'float32; set PRECISION = "auto" or "float32" to settle them.'
        )
        return False
    print(f"{len(calls)} close call(s) for bfloat16: computing the ranking again in float32.")
    return True


class _Run(Protocol):
    """A notebook's run: features in one precision and the ranking they give."""

    ranking: pd.DataFrame

    @property
    def precision(self) -> str: ...


Run = TypeVar("Run", bound=_Run)


@dataclasses.dataclass
class Settled(Generic[Run]):
    """What :func:`settle_precision` returns: the run whose ranking stands.

    Attributes:
        run: the run passed in, or the float32 one made instead; ``run.precision`` is its
            precision and ``run.ranking`` the ranking in effect.
        close_calls: :func:`close_calls` of the first run's ranking.
        seconds: time spent on the float32 run (0 when the first ranking stood).
    """

    run: Run
    close_calls: pd.DataFrame
    seconds: float


def settle_precision(
    asked: str,
    run: Run,
    run_in: Callable[[str], Run],
    top_n: int,
    near_duplicate_ratio: float | None = None,
    margin: float = BFLOAT16_MARGIN,
) -> Settled[Run]:
    """The ranking to trust: ``run``'s, or float32's when bfloat16 left close calls.

    Notebooks 02, 03 and 04 end their ranking step with this one call. When ``run`` computed
    in bfloat16, ``PRECISION`` ``asked`` for "auto" and its ranking has :func:`close_calls`,
    ``run_in("float32")`` does the notebook's steps again in float32 and that run stands;
    otherwise ``run`` stands (see :func:`float32_needed`, which prints one line saying which).
    """
    calls = close_calls(run.ranking, top_n, near_duplicate_ratio, margin)
    if not float32_needed(asked, run.precision, calls):
        return Settled(run, calls, 0.0)
    started = time.perf_counter()
    return Settled(run_in(features.FLOAT32), calls, time.perf_counter() - started)


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
    extractor, _, _ = features.load_extractor(weights, image_size, layer, image_dir, precision)
    extraction = features.extract_features(extractor, paths, batch_size, cache_dir)
    flake_files = features.readable_flakes(extraction, image_dir)
    neighbours = search.nearest_distinct_neighbours(extraction.features)
    return Ranked(
        extractor, extraction, flake_files, search.rank_uniqueness(neighbours, flake_files)
    )
