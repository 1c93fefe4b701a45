"""Figures: montages of flakes, the distance box plot, the most-unique gallery, retrieval bars,
the atlas (its layout: :mod:`atlas`), the certificate (notebook 04) and notebook 05's cell maps.

Each function returns a matplotlib Figure, so the notebook decides whether to show it, save it
(:func:`save_figure`) or both. Demo runs (random weights, synthetic crystals) pass ``demo`` —
``True`` or the reason as text — and get DEMO stamped across the figure, so a demo picture can
never be mistaken for a real result.

Every text that can hold a file name is drawn with ``LITERAL``: a file may be called
``cost_$x^$.png``, and matplotlib would otherwise read ``$...$`` as maths.
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
from matplotlib.patches import Rectangle
from PIL import Image

from snowflake_tools import atlas, files, images, search

#: Text settings that draw a string exactly as written, for texts that show file names:
#: without them matplotlib reads ``$...$`` as maths (``cost_$x^$.png`` stops the figure with a
#: parse error) and, with ``text.usetex`` on, hands ``_``, ``^``, ``\`` and ``{}`` to LaTeX.
LITERAL = {"parse_math": False, "usetex": False}


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
    figure.text(
        0.5, 0.0, f"DEMO: {why}", color="red", ha="center", va="top", fontsize=10, **LITERAL
    )
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
        axis.set_title(title, fontsize=8, **LITERAL)
    if suptitle:
        figure.suptitle(suptitle, **LITERAL)
    figure.tight_layout()
    return stamp_demo(figure, demo)


def thumbnail(path: str | os.PathLike, side: int) -> Image.Image:
    """An RGB thumbnail of the image at ``path``, at most ``side`` pixels each way.

    A file that cannot be read any more gives a grey square, so one bad file never stops a
    figure or report.
    """
    try:
        image = Image.fromarray(read_for_display(path))
    except (OSError, ValueError):
        return Image.new("RGB", (side, side), (128, 128, 128))
    image.thumbnail((side, side))
    return image


def message_figure(text: str, demo: bool | str = False) -> Figure:
    """A small figure that shows only ``text``: drawn where a plot would have nothing to show."""
    figure, axis = plt.subplots(figsize=(8, 1.6))
    axis.axis("off")
    axis.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True, **LITERAL)
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
            arrowprops={"arrowstyle": "-", "color": "C3", "lw": 0.6, "shrinkA": 0}, **LITERAL,
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
    distance, so the figure can be read without the table. ``top_n`` is 1 or more.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be 1 or more, got {top_n}.")
    top = ranking.dropna(subset=["distance"]).head(top_n)
    if top.empty:
        return message_figure(search.NO_DISTINCT_NEIGHBOUR.format(n=len(ranking)), demo)
    median = ranking["distance"].median()
    figure, axes = plt.subplots(len(top), 2, figsize=(7, 3.4 * len(top)), squeeze=False)
    for (left, right), row in zip(axes, top.itertuples(), strict=True):
        left.imshow(read_for_display(Path(image_dir) / row.file))
        left.set_title(f"Unique rank {row.rank}\n{row.file}", fontsize=10, weight="bold", **LITERAL)
        right.imshow(read_for_display(Path(image_dir) / row.nearest_file))
        right.set_title(
            f"its nearest look-alike\n{row.nearest_file}\n"
            f"L2² = {row.distance:.4g}  ({row.distance / median:.2f}× median)",
            fontsize=10,
            **LITERAL,
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


# --- Why is it unique? (notebook 05) ----------------------------------------------------------

#: Colour map of the cell maps: dark where a cell adds little, bright yellow where it adds most.
CELL_MAP_COLOURS = "inferno"


def overlay_cell_map(
    axis, path: str | os.PathLike, cell_map: np.ndarray, image_size: int, vmax: float
):
    """Draw the photo at ``path`` with ``cell_map`` (a feature grid's values) laid over it.

    The map is placed where its cells fall on the photo as shown: ``images.square_extent``
    undoes the padding and resize of ``images.load_image``. Quiet cells stay see-through, so
    the crystal shows through them. Returns the image of the map, for a colour bar.
    """
    photo = read_for_display(path)
    height, width = photo.shape[:2]
    place = images.place_in_square(width, height, image_size)
    axis.imshow(photo)
    scaled = np.clip(cell_map / vmax, 0, 1) if vmax > 0 else np.zeros_like(cell_map)
    shown = axis.imshow(
        cell_map, cmap=CELL_MAP_COLOURS, vmin=0, vmax=max(vmax, 1e-12),
        extent=images.square_extent(place), alpha=0.65 * scaled, interpolation="nearest",
    )  # fmt: skip
    axis.set_xlim(0, width)
    axis.set_ylim(height, 0)
    axis.axis("off")
    return shown


def plot_cell_maps(
    rows: Sequence[Sequence[tuple[str | os.PathLike, np.ndarray, str]]],
    image_size: int,
    label: str = "squared difference per cell",
    suptitle: str | None = None,
    tile_inches: float = 3.6,
    demo: bool | str = False,
) -> Figure:
    """Rows of photos with a cell map over each: one colour scale and colour bar per row.

    Each row is a list of ``(path, cell_map, title)``; the maps of one row share their scale,
    so a cell that is brighter is larger, whichever photo it lies on.
    """
    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(columns * tile_inches + 1.0, len(rows) * tile_inches + 0.6),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for axis in axes.flat:
        axis.axis("off")
    for row_axes, row in zip(axes, rows, strict=True):
        vmax = max(float(cell_map.max()) for _, cell_map, _ in row)
        for axis, (path, cell_map, title) in zip(row_axes, row, strict=False):
            shown = overlay_cell_map(axis, path, cell_map, image_size, vmax)
            axis.set_title(title, fontsize=9)
        bar = figure.colorbar(shown, ax=list(row_axes), fraction=0.04, pad=0.01)
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if suptitle:
        figure.suptitle(suptitle)
    return stamp_demo(figure, demo)


def plot_why_unique(
    explained: pd.DataFrame, image_dir: str | os.PathLike, image_size: int, k: int,
    demo: bool | str = False,
) -> Figure:  # fmt: skip
    """Per explained flake: the photo with its novelty map, and its nearest look-alike with
    the difference map (notebook 05's ``why_unique.png``).

    ``explained`` has one row per flake with ``rank, file, nearest_file, distance`` and the
    two ``(rows, columns)`` maps in ``novelty`` and ``difference``.
    """
    image_dir = Path(image_dir)
    rows = [
        [
            (
                image_dir / flake.file,
                flake.novelty,
                f"Unique rank {flake.rank}: {flake.file}\nwhat none of its {k} look-alikes has",
            ),
            (
                image_dir / flake.nearest_file,
                flake.difference,
                f"nearest look-alike: {flake.nearest_file}\n"
                f"where they differ: L2² = {flake.distance:.4g} in all",
            ),
        ]  # fmt: skip
        for flake in explained.itertuples()
    ]
    return plot_cell_maps(
        rows, image_size, suptitle="Why is it unique? Bright cells add the most distance",
        demo=demo,
    )  # fmt: skip


def plot_most_different(
    chosen: pd.DataFrame, top: pd.DataFrame, image_dir: str | os.PathLike,
    chosen_summary: str, top_summary: str, tile_inches: float = 2.2, demo: bool | str = False,
) -> Figure:  # fmt: skip
    """The most different set (top row) above the top of the ranking (bottom row).

    ``chosen`` is ``why/most_different.csv`` (``order, file, distance_to_set``), ``top`` the
    first rows of the ranking (``rank, file, distance``); each row's summary names its
    smallest and median pairwise distance.
    """
    image_dir = Path(image_dir)
    columns = max(len(chosen), len(top))
    figure = plt.figure(
        figsize=(columns * tile_inches, 2 * tile_inches + 1.2), layout="constrained"
    )
    upper, lower = figure.subfigures(2, 1)
    for part, table, summary in ((upper, chosen, chosen_summary), (lower, top, top_summary)):
        axes = part.subplots(1, columns, squeeze=False)[0]
        for axis in axes:
            axis.axis("off")
        for axis, flake in zip(axes, table.itertuples(), strict=False):
            axis.imshow(read_for_display(image_dir / flake.file))
            if hasattr(flake, "order"):
                gap = "first" if pd.isna(flake.distance_to_set) else f"{flake.distance_to_set:.4g}"
                title = f"{flake.order}. to the set: {gap}\n{flake.file}"
            else:
                title = f"rank {flake.rank}. to nearest: {flake.distance:.4g}\n{flake.file}"
            axis.set_title(title, fontsize=7)
        part.suptitle(summary, fontsize=10, weight="bold")
    return stamp_demo(figure, demo)


def plot_atlas(
    positions: np.ndarray,
    files: Sequence[str],
    ranking: pd.DataFrame,
    near_duplicates: pd.DataFrame,
    image_dir: str | os.PathLike,
    top_n: int = 3,
    demo: bool | str = False,
    max_thumbnails: int = atlas.MAX_THUMBNAILS,
) -> Figure:
    """Draw the atlas: each flake at its ``atlas.layout`` position, as a thumbnail or a point.

    Args:
        positions: ``atlas.layout`` output, one row per name in ``files``.
        files: image file names (relative to ``image_dir``) of the flakes to draw; a subset
            of the ranking is fine.
        ranking: ``search.rank_uniqueness`` output (columns ``rank, file, nearest_file,
            distance, duplicates``) holding at least ``files``.
        near_duplicates: ``search.find_near_duplicates`` output; pairs with both files drawn
            are joined by a line.
        image_dir: folder the file names are relative to.
        top_n: the most unique flakes, outlined in red and labelled with their rank.
        demo: passed to ``stamp_demo``.
        max_thumbnails: up to this many flakes every flake is a thumbnail; beyond it every
            flake is a point coloured by its distance, and the ``atlas.THUMBNAILS_BEYOND`` most
            unique ones are still thumbnails.

    Exact copies share a position and are drawn as a small stack with their count.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (len(files), 2):
        raise ValueError(f"positions has shape {positions.shape}, expected ({len(files)}, 2)")
    rows = atlas.select_rows(ranking, files)
    as_thumbnails = len(rows) <= max_thumbnails
    half = atlas.thumbnail_side(len(rows), max_thumbnails) / 2
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
    shown = rows.index if as_thumbnails else rows.nsmallest(atlas.THUMBNAILS_BEYOND, "rank").index
    stack_of = atlas.stacks(positions)
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
    return stamp_demo(figure, demo)


def plot_certificate(approximate: np.ndarray, certified, demo: bool | str = False) -> Figure:
    """The certificate (``ann.Certified``) drawn: approximate scores, the candidates, the bound.

    Grey: every row's approximate score, largest first. Blue: the exact scores of the
    candidates checked. Everything right of them lies below the dashed bound, and the bound lies
    below the ``top_n``-th exact score (solid): nothing outside can enter the top. A
    certificate that does not hold says so in the title.
    """
    top_n = certified.top_n
    order = np.argsort(-np.nan_to_num(approximate, nan=-np.inf), kind="stable")
    shown = order[: min(len(order), 3 * certified.candidates_checked)]
    figure, axis = plt.subplots(figsize=(9, 4))
    axis.plot(np.arange(1, len(shown) + 1), approximate[shown], ".", color="0.6", ms=3,
              label="approximate score (an over-estimate)")  # fmt: skip
    checked = np.isin(shown, certified.exact_rows)
    axis.plot(np.flatnonzero(checked) + 1, certified.scores[shown[checked]], ".", color="C0",
              ms=4, label="exact score of the rows checked")  # fmt: skip
    n_checked = certified.candidates_checked
    axis.axvline(n_checked + 0.5, color="C1", lw=1, label=f"{n_checked} candidates checked")
    if np.isfinite(certified.bound):
        axis.axhline(certified.bound, color="C3", ls="--", lw=1,
                     label=f"bound: largest score outside = {certified.bound:.4g}")  # fmt: skip
    axis.axhline(certified.top_n_exact, color="C2", lw=1,
                 label=f"exact score of rank {top_n} = {certified.top_n_exact:.4g}")  # fmt: skip
    axis.set(xlabel="rows, by approximate score (largest first)", ylabel="uniqueness score")
    if certified.holds:
        axis.set_title(f"Certified: no flake outside the candidates can reach the top {top_n}")
    else:
        axis.set_title(f"NOT certified: the top {top_n} has no real scores")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return stamp_demo(figure, demo)
