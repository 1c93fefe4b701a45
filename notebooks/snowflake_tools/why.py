"""Why is a flake unique? Cell maps of the distance, and the most different set (notebook 05).

The squared L2 distance between two flattened feature maps of shape ``(rows, columns,
channels)`` is a sum over the grid of per-cell squared differences, so it splits exactly into
one number per cell (:func:`difference_map`, notebook 05 step 2). :func:`novelty_map` asks a
question that does not depend on pose: how far is each cell of a flake from the closest cell
*anywhere* in its look-alikes' maps (step 4). :func:`most_different_set` picks flakes that
are far from each other by greedy farthest-point selection (step 5). The notebook shows these
functions with ``inspect.getsource``; :func:`explain` and :func:`cell_table` are plumbing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from snowflake_tools import images

#: Columns of ``why/why_unique.csv``: one row per explained flake and grid cell over the photo.
CELL_COLUMNS = [
    "rank", "file", "nearest_file", "cell_row", "cell_col",
    "top", "left", "bottom", "right", "difference_share", "novelty",
]  # fmt: skip
#: Columns of ``why/most_different.csv``.
SET_COLUMNS = ["order", "file", "distance_to_set"]


def difference_map(flake: np.ndarray, neighbour: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """Per-cell squared difference of two flattened feature maps: ``(rows, columns)`` float64.

    ``grid`` is the layer's output shape ``(rows, columns, channels)``. The map sums to the
    squared L2 distance of the two vectors, the distance the ranking uses (notebook 05, step 2).
    """
    difference = flake.reshape(grid).astype(np.float64) - neighbour.reshape(grid)
    return (difference**2).sum(axis=-1)


def novelty_map(flake: np.ndarray, look_alikes: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """For each cell of ``flake``, the squared L2 distance to the closest cell vector anywhere
    in the maps of ``look_alikes`` (``(k, n_values)``): ``(rows, columns)`` float64.

    A cell is dark when some look-alike has a similar part *somewhere*, bright when none has
    one anywhere: SPADE's and PatchCore's patch novelty (notebook 05, step 4). It is never
    above :func:`difference_map` with a look-alike at the same cell, which is one candidate.
    """
    channels = grid[-1]
    cells = flake.reshape(-1, channels).astype(np.float64)
    bank = np.asarray(look_alikes).reshape(-1, channels).astype(np.float64)
    squared = (cells**2).sum(1)[:, None] + (bank**2).sum(1)[None, :] - 2 * cells @ bank.T
    return np.maximum(squared.min(axis=1), 0.0).reshape(grid[:-1])


def shares(cell_map: np.ndarray) -> np.ndarray:
    """``cell_map`` as each cell's share of its sum (the shares add up to 1; all 0 if it is 0)."""
    total = cell_map.sum()
    return cell_map / total if total > 0 else np.zeros_like(cell_map)


def squared_distances(features: np.ndarray, row: int) -> np.ndarray:
    """Squared L2 distance from every row of ``features`` to row ``row``: float64 ``(n,)``.

    Computed from the differences themselves, so an exact copy is at exactly 0.
    """
    difference = features - features[row]
    return np.einsum("ij,ij->i", difference, difference, dtype=np.float64)


def most_different_set(
    features: np.ndarray, size: int, first: int, min_distance: float = 0.0
) -> tuple[list[int], list[float]]:
    """Greedy farthest-point selection (Gonzalez's k-center): rows far from each other.

    Starts from row ``first``, then adds, again and again, the row whose squared L2 distance
    to the nearest row already chosen is largest (the lowest row on a tie), until ``size``
    rows are chosen. A row at ``min_distance`` or less from the chosen ones never enters, so
    exact copies (distance 0) never do, nor near-duplicates when ``min_distance`` is the
    near-duplicate threshold; the set stops short when only such rows are left.
    Costs ``size`` passes over the rows. Notebook 05, step 5, states its guarantee.

    Returns ``(rows, distance_to_set)``: the chosen rows in the order chosen, and each one's
    squared distance to the nearest row chosen before it (NaN for the first).
    """
    chosen, distance_to_set = [first], [float("nan")]
    to_set = squared_distances(features, first)
    while len(chosen) < size:
        farthest = int(np.argmax(to_set))
        if to_set[farthest] <= min_distance:
            break
        chosen.append(farthest)
        distance_to_set.append(float(to_set[farthest]))
        to_set = np.minimum(to_set, squared_distances(features, farthest))
    return chosen, distance_to_set


def pairwise_distances(features: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """Squared L2 distances between every two of ``rows``, each pair once: float64 array."""
    rows = list(rows)
    pairs = [squared_distances(features[rows[a:]], 0)[1:] for a in range(len(rows) - 1)]
    return np.concatenate(pairs) if pairs else np.empty(0)


def explain(
    features: np.ndarray,
    row: int,
    nearest: int,
    look_alikes: Sequence[int],
    grid: Sequence[int],
) -> dict:
    """Both maps of flake ``row``: ``{"difference": ..., "novelty": ...}``, each ``(rows,
    columns)``; the difference is with row ``nearest``, the novelty against ``look_alikes``."""
    return {
        "difference": difference_map(features[row], features[nearest], grid),
        "novelty": novelty_map(features[row], features[list(look_alikes)], grid),
    }


def cell_table(
    rank: int,
    file: str,
    nearest_file: str,
    maps: dict,
    place: images.Placement,
) -> pd.DataFrame:
    """Rows of ``why_unique.csv`` for one flake: one per grid cell over the photo.

    ``maps`` is :func:`explain`'s answer, ``place`` where the photo sits in the square
    (``images.place_in_square``). ``difference_share`` is the cell's share of the whole
    squared distance, padding cells included, so the shares of the cells listed add up to 1
    less what the padding holds.
    """
    boxes = images.cell_boxes(place, maps["difference"].shape)
    at = (boxes["cell_row"].to_numpy(), boxes["cell_col"].to_numpy())
    table = boxes.assign(
        rank=rank,
        file=file,
        nearest_file=nearest_file,
        difference_share=shares(maps["difference"])[at],
        novelty=maps["novelty"][at],
    )
    return table[CELL_COLUMNS]
