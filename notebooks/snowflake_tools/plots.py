"""Figures: montages of flakes, the distance box plot, the most-unique gallery, retrieval bars.

Each function returns a matplotlib Figure, so the notebook decides whether to show it, save it
(:func:`save_figure`) or both. Demo runs (random weights, synthetic crystals) pass ``demo`` —
``True`` or the reason as text — and get DEMO stamped across the figure, so a demo picture can
never be mistaken for a real result.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from snowflake_tools import files, images, search


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``figure`` atomically (the format follows the file ending) and return the path."""
    path = Path(path)
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip("."))
    return path


def stamp_demo(figure: Figure, demo: bool | str = True) -> Figure:
    """Write a large, faint DEMO across ``figure`` and say why at the bottom.

    ``demo`` is the reason as text, ``True`` for "random weights", or false to leave the
    figure as it is, so every plotting function can pass its ``demo`` argument straight on.
    """
    if not demo:
        return figure
    why = demo if isinstance(demo, str) else "random weights"
    figure.text(
        0.5, 0.5, "DEMO", fontsize=90, color="red", alpha=0.18, rotation=30,
        ha="center", va="center", weight="bold", zorder=100,
    )  # fmt: skip
    figure.text(0.5, 0.0, f"DEMO: {why}", color="red", ha="center", va="top", fontsize=10)
    return figure


def read_for_display(path: str | os.PathLike) -> np.ndarray:
    """An image as uint8 RGB in its own proportions, for showing (not for the model)."""
    with images.open_image(path) as image:
        image.seek(0)
        return np.asarray(images.to_rgb(image))


def show_flakes(
    flakes: Sequence[str | os.PathLike | np.ndarray],
    titles: Sequence[str] | None = None,
    columns: int = 6,
    tile_inches: float = 2.0,
    suptitle: str | None = None,
    demo: bool | str = False,
) -> Figure:
    """A grid of images with a title over each.

    ``flakes`` holds image paths (shown in their own proportions, titled with the file name by
    default) or pixel arrays such as ``images.load_image`` returns (values 0-255).
    """
    rows = max(1, math.ceil(len(flakes) / columns))
    columns = min(columns, max(1, len(flakes)))
    figure, axes = plt.subplots(
        rows, columns, figsize=(columns * tile_inches, rows * tile_inches * 1.1), squeeze=False
    )
    if titles is None:
        titles = [Path(f).name if isinstance(f, str | os.PathLike) else "" for f in flakes]
    for axis in axes.flat:
        axis.axis("off")
    for axis, flake, title in zip(axes.flat, flakes, titles, strict=False):
        if isinstance(flake, str | os.PathLike):
            axis.imshow(read_for_display(flake))
        else:
            axis.imshow(np.clip(flake, 0, 255).astype(np.uint8))
        axis.set_title(title, fontsize=8)
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
    return stamp_demo(figure, demo)


def message_figure(text: str, demo: bool | str = False) -> Figure:
    """A small figure that shows only ``text``: drawn where a plot would have nothing to show."""
    figure, axis = plt.subplots(figsize=(8, 1.6))
    axis.axis("off")
    axis.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True)
    return stamp_demo(figure, demo)


def outliers(distances: pd.Series) -> pd.Series:
    """Boolean mask of values above Q3 + 1.5 IQR: the points a box plot draws separately."""
    q1, q3 = distances.quantile([0.25, 0.75])
    return distances > q3 + 1.5 * (q3 - q1)


def plot_distances(ranking: pd.DataFrame, max_labels: int = 8, demo: bool | str = False) -> Figure:
    """Box plot of every flake's distance to its nearest distinct neighbour.

    Each flake is a dot; outliers (the candidates for "most unique") are red and the farthest
    ``max_labels`` of them carry their file names, stacked above the box so they stay readable.
    """
    distances = ranking["distance"].dropna()
    if distances.empty:
        return message_figure(search.NO_DISTINCT_NEIGHBOUR.format(n=len(ranking)), demo)
    names = ranking.loc[distances.index, "file"]
    figure, axis = plt.subplots(figsize=(10, 4.2))
    axis.boxplot(distances, orientation="horizontal", widths=0.3, showfliers=False)
    jitter = pd.Series(
        np.random.default_rng(0).uniform(-0.08, 0.08, len(distances)), distances.index
    )
    is_outlier = outliers(distances)
    axis.scatter(distances[~is_outlier], 1 + jitter[~is_outlier], s=12, alpha=0.6, color="C0")
    axis.scatter(distances[is_outlier], 1 + jitter[is_outlier], s=30, color="C3", label="outlier")
    labelled = distances[is_outlier].sort_values(ascending=False).head(max_labels)
    levels = np.linspace(1.62, 1.25, max(len(labelled), 2))
    for level, (row, value) in zip(levels, labelled.items(), strict=False):
        axis.annotate(
            names[row], xy=(value, 1 + jitter[row]), xytext=(value, level),
            ha="right", va="center", fontsize=8, color="C3",
            arrowprops={"arrowstyle": "-", "color": "C3", "lw": 0.6, "shrinkA": 0},
        )  # fmt: skip
    axis.set_ylim(0.75, 1.7)
    axis.set_yticks([])
    axis.set_xlabel("squared L2 distance to the nearest distinct flake")
    axis.set_title(
        f"How far is each flake from its nearest look-alike? ({len(distances)} flakes, "
        f"{int(is_outlier.sum())} outliers, median {distances.median():.4g})"
    )
    if is_outlier.any():
        axis.legend(loc="lower right")
    figure.tight_layout()
    return stamp_demo(figure, demo)


def plot_most_unique(
    ranking: pd.DataFrame,
    image_dir: str | os.PathLike,
    top_n: int = 3,
    demo: bool | str = False,
) -> Figure:
    """The ``top_n`` most unique flakes (left) beside their nearest distinct neighbour (right).

    Titles carry the rank, the file names, the distance and how it compares to the median
    distance, so the figure can be read without the table.
    """
    top = ranking.dropna(subset=["distance"]).head(top_n)
    if top.empty:
        return message_figure(search.NO_DISTINCT_NEIGHBOUR.format(n=len(ranking)), demo)
    median = ranking["distance"].median()
    figure, axes = plt.subplots(len(top), 2, figsize=(7, 3.4 * len(top)), squeeze=False)
    for (left, right), row in zip(axes, top.itertuples(), strict=True):
        left.imshow(read_for_display(Path(image_dir) / row.file))
        left.set_title(f"Unique rank {row.rank}\n{row.file}", fontsize=10, weight="bold")
        right.imshow(read_for_display(Path(image_dir) / row.nearest_file))
        right.set_title(
            f"its nearest look-alike\n{row.nearest_file}\n"
            f"L2² = {row.distance:.4g}  ({row.distance / median:.2f}× median)",
            fontsize=10,
        )
        left.axis("off")
        right.axis("off")
    figure.suptitle(f"The {len(top)} most unique snowflakes and their closest look-alikes")
    figure.tight_layout()
    return stamp_demo(figure, demo)


def plot_self_retrieval(summary: pd.DataFrame, demo: bool | str = False) -> Figure:
    """Bar charts of ``robustness.summarise_retrieval``: recall@1 (left) and median rank (right),
    one group of bars per kind of variant, one bar per method, each bar labelled with its value.
    """
    variants = list(dict.fromkeys(summary["variant"]))
    methods = list(dict.fromkeys(summary["method"]))
    table = summary.set_index(["method", "variant"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    width = 0.8 / len(methods)
    positions = np.arange(len(variants))
    for m, method in enumerate(methods):
        rows = table.loc[method].reindex(variants)
        for axis, column, fmt in ((left, "recall_at_1", "{:.2f}"), (right, "median_rank", "{:g}")):
            bars = axis.bar(positions + (m - (len(methods) - 1) / 2) * width, rows[column],
                            width, label=method, color=f"C{m}")  # fmt: skip
            axis.bar_label(bars, [fmt.format(value) for value in rows[column]], fontsize=7)
    n_flakes = int(summary["n_variants"].iloc[0])  # one variant of each kind per flake
    left.set_title(f"Recall@1: share of variants whose nearest neighbour is their original\n"
                   f"({n_flakes} flakes; 1 = always found)")  # fmt: skip
    left.set_ylim(0, 1.12)
    right.set_title("Median rank of the original among a variant's neighbours\n(1 = best)")
    right.set_ylim(0, max(2.0, float(summary["median_rank"].max())) * 1.15)
    for axis in (left, right):
        axis.set_xticks(positions, variants, rotation=15)
    right.legend(fontsize=8, loc="upper right")  # right: the tall bars are on the left
    figure.tight_layout()
    return stamp_demo(figure, demo)
