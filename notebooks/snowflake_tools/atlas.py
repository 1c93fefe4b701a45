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

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from snowflake_tools import plots, search

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
    features = search.check_features(features)
    groups, first_rows, _ = search.group_copies(features)
    distinct = features[first_rows]
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
    return (placed / np.where(span > 0, span, 1.0))[groups]


def thumbnail(path: str | os.PathLike, side: int) -> Image.Image:
    """An RGB thumbnail of the image at ``path``, at most ``side`` pixels each way.

    A file that cannot be read any more gives a grey square, so one bad file never stops a
    figure or report.
    """
    try:
        image = Image.fromarray(plots.read_for_display(path))
    except (OSError, ValueError):
        return Image.new("RGB", (side, side), (128, 128, 128))
    image.thumbnail((side, side))
    return image


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


def plot_atlas(
    positions: np.ndarray,
    files: Sequence[str],
    ranking: pd.DataFrame,
    near_duplicates: pd.DataFrame,
    image_dir: str | os.PathLike,
    top_n: int = 3,
    demo: bool | str = False,
    max_thumbnails: int = MAX_THUMBNAILS,
) -> Figure:
    """Draw the atlas: each flake at its ``layout`` position, as a thumbnail or a point.

    Args:
        positions: ``layout`` output, one row per name in ``files``.
        files: image file names (relative to ``image_dir``) of the flakes to draw; a subset
            of the ranking is fine.
        ranking: ``search.rank_uniqueness`` output (columns ``rank, file, nearest_file,
            distance, duplicates``) holding at least ``files``.
        near_duplicates: ``search.find_near_duplicates`` output; pairs with both files drawn
            are joined by a line.
        image_dir: folder the file names are relative to.
        top_n: the most unique flakes, outlined in red and labelled with their rank.
        demo: passed to ``plots.stamp_demo``.
        max_thumbnails: up to this many flakes every flake is a thumbnail; beyond it every
            flake is a point coloured by its distance, and the ``THUMBNAILS_BEYOND`` most
            unique ones are still thumbnails.

    Exact copies share a position and are drawn as a small stack with their count.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (len(files), 2):
        raise ValueError(f"positions has shape {positions.shape}, expected ({len(files)}, 2)")
    rows = select_rows(ranking, files)
    as_thumbnails = len(rows) <= max_thumbnails
    half = thumbnail_side(len(rows), max_thumbnails) / 2
    figure, axis = plt.subplots(figsize=(12, 10))
    axis.set_aspect("equal")
    axis.axis("off")

    position_of = dict(zip(rows["file"], map(tuple, positions), strict=True))
    for pair in near_duplicates.itertuples():
        if pair.file in position_of and pair.nearest_file in position_of:
            (x0, y0), (x1, y1) = position_of[pair.file], position_of[pair.nearest_file]
            axis.plot([x0, x1], [y0, y1], color="orange", lw=2, zorder=4, marker="o", ms=3)

    if not as_thumbnails:
        points = axis.scatter(
            positions[:, 0], positions[:, 1], c=rows["distance"], s=8, cmap="viridis", zorder=2
        )
        figure.colorbar(
            points, ax=axis, shrink=0.6, label="squared L2 to the nearest distinct flake"
        )
    shown = rows.index if as_thumbnails else rows.nsmallest(THUMBNAILS_BEYOND, "rank").index
    stack_of = stacks(positions)
    drawn_stacks: set[int] = set()
    for row in shown:
        if stack_of[row] in drawn_stacks:
            continue  # a copy already drawn at this very spot
        drawn_stacks.add(stack_of[row])
        x, y = positions[row]
        copies = int((stack_of == stack_of[row]).sum())
        for depth in range(min(copies - 1, 2), 0, -1):  # two cards behind show "more than one"
            shift = depth * half * 0.25
            axis.add_patch(
                Rectangle(
                    (x - half + shift, y - half - shift),
                    2 * half,
                    2 * half,
                    facecolor="#9aa8bb",
                    edgecolor="black",
                    lw=1.0,
                    zorder=3,
                )
            )
        axis.imshow(
            thumbnail(Path(image_dir) / rows.at[row, "file"], 96),
            extent=(x - half, x + half, y - half, y + half),
            zorder=3,
        )
        if copies > 1:
            axis.text(
                x + half,
                y + half,
                f"×{copies}",
                ha="right",
                va="top",
                fontsize=8,
                color="black",
                backgroundcolor="white",
                zorder=6,
            )
    for row in rows.index[rows["rank"] <= top_n]:
        x, y = positions[row]
        axis.add_patch(
            Rectangle(
                (x - half, y - half),
                2 * half,
                2 * half,
                fill=False,
                edgecolor="red",
                lw=2.5,
                zorder=5,
            )
        )
        axis.text(
            x,
            y + half * 1.08,
            f"#{rows.at[row, 'rank']}",
            ha="center",
            va="bottom",
            color="red",
            weight="bold",
            fontsize=11,
            zorder=6,
        )
    axis.set_xlim(-2 * half, 1 + 2 * half)
    axis.set_ylim(-2 * half, positions[:, 1].max() + 3 * half)
    style = "thumbnails" if as_thumbnails else f"points ({len(shown)} most unique as thumbnails)"
    axis.set_title(
        f"The snowflake atlas: {len(rows)} flakes placed by t-SNE of their features, as {style}\n"
        f"red: the {min(top_n, len(rows))} most unique, by rank · orange: near-duplicate pairs"
        " · stacks: exact copies"
    )
    figure.tight_layout()
    return plots.stamp_demo(figure, demo)
