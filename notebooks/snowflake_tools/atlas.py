"""The snowflake atlas: every flake on one 2-D map of its features (notebook 02, "The atlas").

The ranking says *which* flake is the most unique; the atlas shows *why*: flakes that VGG16
sees as alike sit together, and the most unique ones sit alone.

Why t-SNE (scikit-learn's ``TSNE``): the ranking is about neighbourhoods — who is a flake's
nearest look-alike — and t-SNE is built to keep exactly those: points that are near in the
100,352-dimensional feature space stay near on the map. PCA keeps only the few directions of
largest spread and piles most flakes on top of each other; UMAP and openTSNE read about as
well at these sizes but would add heavy dependencies (numba) for no gain the reader can see.
Read the map with t-SNE's usual caveats: sizes of clusters and distances *between* clusters
mean little, and the ranking, not the map, is the measure — an isolated flake on the map is
usually far from all others in feature space, but only the distances in the table prove it.

Exact copies (identical feature vectors) are laid out once and share one position, so they
show as one stack; near-duplicate pairs are joined by a line.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from snowflake_tools import search

#: Above this many flakes the atlas draws points instead of thumbnails (300 thumbnails still
#: read on a 12-inch figure; 2,000 would be postage stamps on top of each other).
MAX_THUMBNAILS = 300
#: Past ``MAX_THUMBNAILS``, this many of the most unique flakes are still drawn as thumbnails.
THUMBNAILS_BEYOND = 12
#: t-SNE's perplexity (roughly: how many neighbours each point cares about) for large sets.
PERPLEXITY = 30.0
#: Features are first reduced to this many principal components, as scikit-learn advises for
#: t-SNE on wide data: it removes noise and makes t-SNE fast on 100,352 values per flake.
PCA_COMPONENTS = 50


def perplexity_for(n_points: int) -> float:
    """t-SNE perplexity for ``n_points`` distinct flakes: ``PERPLEXITY``, less for small sets.

    Perplexity must stay below the number of points, and a third of them keeps a few dozen
    flakes from being squeezed into one blob.
    """
    return float(np.clip((n_points - 1) / 3, 1.0, PERPLEXITY))


def layout(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Place every flake on a 2-D map: float64 array ``(n_flakes, 2)``, rows as in ``features``.

    Distinct feature vectors are reduced with PCA to at most ``PCA_COMPONENTS`` values, then
    laid out with t-SNE (``perplexity_for``, started from the PCA map, one thread): the same
    features and seed always give the same map (``seed`` feeds the randomized PCA used for
    500 or more flakes; t-SNE started from PCA draws nothing at random).
    Exact copies get exactly the same position. Each axis is scaled to run from 0 to 1:
    t-SNE's axes and proportions carry no meaning, and a map that fills its square leaves room
    for the thumbnails.
    """
    _, copies, distinct = search.distinct_rows(features)
    if len(distinct) <= 3:
        # Too few points for t-SNE to mean anything: spread them along a line.
        placed = np.column_stack(
            [np.arange(len(distinct), dtype=np.float64), np.zeros(len(distinct))]
        )
    else:
        components = min(PCA_COMPONENTS, len(distinct) - 1, distinct.shape[1])
        reduced = PCA(
            components,
            svd_solver="full" if len(distinct) < 500 else "randomized",
            random_state=seed,
        ).fit_transform(distinct)
        placed = (
            TSNE(
                n_components=2,
                perplexity=perplexity_for(len(distinct)),
                init="pca",
                random_state=seed,
                n_jobs=1,
            )
            .fit_transform(reduced)
            .astype(np.float64)
        )
    placed -= placed.min(axis=0)
    span = placed.max(axis=0)
    return (placed / np.where(span > 0, span, 1.0))[copies.groups]


def thumbnail_side(n_flakes: int, max_thumbnails: int = MAX_THUMBNAILS) -> float:
    """Side of a thumbnail on the map (which spans 0 to 1): smaller as the map fills up.

    Past ``max_thumbnails`` only a few thumbnails are drawn among the points, at a fixed size.
    """
    if n_flakes > max_thumbnails:
        return 0.05
    return float(np.clip(0.9 / np.sqrt(max(n_flakes, 1)), 0.04, 0.09))


def select_rows(ranking: pd.DataFrame, files: Sequence[str]) -> pd.DataFrame:
    """The rows of ``ranking`` for ``files``, in the order of ``files``.

    Lets a caller map only a subset of the flakes (notebook 04 maps its top flakes): any file
    not in ``ranking`` is a ValueError naming it.
    """
    indexed = ranking.set_index("file", drop=False)
    missing = [name for name in files if name not in indexed.index]
    if missing:
        raise ValueError(f"{len(missing)} file(s) are not in the ranking, e.g. {missing[:3]}")
    return indexed.loc[list(files)].reset_index(drop=True)


def files_to_show(
    ranking: pd.DataFrame, must_show: Sequence[str], n: int, seed: int = 0
) -> list[str]:
    """``must_show`` (once each, in order), then a random sample of the other ranked files.

    ``n`` files in all, or more when ``must_show`` alone is longer. Notebook 04 maps a readable
    part of a large collection: its top flakes, their look-alikes and a sample of the rest.
    The same ``seed`` gives the same sample.
    """
    chosen = list(dict.fromkeys(must_show))
    others = ranking.loc[~ranking["file"].isin(chosen), "file"]
    sample = others.sample(min(max(0, n - len(chosen)), len(others)), random_state=seed)
    return chosen + sample.tolist()


def stacks(positions: np.ndarray) -> np.ndarray:
    """Label rows that share exactly one position (exact copies): int array, one per row."""
    return np.unique(np.asarray(positions), axis=0, return_inverse=True)[1].reshape(-1)
