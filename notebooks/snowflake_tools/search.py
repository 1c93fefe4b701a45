"""Nearest neighbours that are not exact duplicates, with one batched FAISS search.

Notebook 02, step "Find each flake's nearest other flake", explains the idea on one flake; this
module does it for all of them at once, and gets duplicates, ties and float error right.
"""

from __future__ import annotations

import hashlib

import faiss
import numpy as np
import pandas as pd

#: Neighbours fetched per distinct vector: itself plus a few spare for ties.
_CANDIDATES = 4


def exact_duplicate_groups(features: np.ndarray) -> np.ndarray:
    """Label rows that hold identical vectors with the same group number.

    Returns an int array of length ``n``: ``groups[i] == groups[j]`` exactly when rows ``i``
    and ``j`` are equal element by element. Groups are numbered by their first row, so the
    labelling does not depend on anything but the input order. ``-0.0`` and ``0.0`` count as
    equal, as they do for distances.
    """
    rows = np.ascontiguousarray(features, dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0
    first_row_of = {}
    groups = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        groups[i] = first_row_of.setdefault(key, len(first_row_of))
    return groups


def check_features(features: np.ndarray) -> np.ndarray:
    """``features`` as a C-contiguous float32 matrix, or a ValueError saying what is wrong."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(
            f"features must be a 2-D array (images x values), got shape {features.shape}; "
            "flatten each image's feature map into one row first."
        )
    if not np.isfinite(features).all():
        bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
        raise ValueError(
            f"features rows {bad[:10].tolist()} contain NaN or infinity; "
            "check that those images loaded correctly."
        )
    return np.ascontiguousarray(features, dtype=np.float32)


def distinct_rows(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group exact copies: ``(groups, first_rows)``.

    ``groups[i]`` is the group of row ``i`` (see :func:`exact_duplicate_groups`) and
    ``first_rows[g]`` the first row of group ``g``, its representative: index
    ``features[first_rows]`` to search each distinct vector once.
    """
    groups = exact_duplicate_groups(features)
    return groups, np.unique(groups, return_index=True)[1]


def nearest_distinct_neighbours(features: np.ndarray) -> pd.DataFrame:
    """For every row, its nearest other row that is not an exact duplicate of it.

    Args:
        features: float array of shape ``(n_images, n_values)``, one image per row.

    Returns:
        A DataFrame with one row per input row, in input order, and columns

        - ``nearest``: row number of the nearest distinct vector, ``-1`` if there is none
          (every row is identical to this one);
        - ``distance``: squared L2 distance to it, as ``faiss.IndexFlatL2`` reports it
          (NaN if there is no distinct neighbour);
        - ``duplicates``: how many *other* rows are exact copies of this one.

    Exact duplicates are found by comparing the vectors themselves, never by a distance of
    zero, because float error can give copies a tiny positive or negative distance. Each group
    of copies is indexed once, so copies can neither be chosen nor crowd out the real
    neighbours, whatever order FAISS returns ties in. When two distinct vectors are equally
    near, the one with the lower row number wins, so results are reproducible. All rows are
    searched in a single batched call.
    """
    features = check_features(features)
    groups, first_rows = distinct_rows(features)
    group_sizes = np.bincount(groups)
    distinct = features[first_rows]

    nearest_group = np.full(len(distinct), -1, dtype=np.int64)
    nearest_distance = np.full(len(distinct), np.nan, dtype=np.float64)
    if len(distinct) > 1:
        nearest_group, nearest_distance = _search_distinct(distinct)

    row_groups_nearest = nearest_group[groups]
    has_neighbour = row_groups_nearest >= 0
    nearest_row = np.where(has_neighbour, first_rows[np.maximum(row_groups_nearest, 0)], -1)
    return pd.DataFrame(
        {
            "nearest": nearest_row.astype(np.int64),
            "distance": nearest_distance[groups],
            "duplicates": (group_sizes[groups] - 1).astype(np.int64),
        }
    )


def _search_distinct(distinct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest other vector for every row of ``distinct`` (rows all differ), in one search.

    A query asks again with a larger ``k`` only when its candidates might be cut off inside a
    tie (its last candidate is as near as its best one), which real features almost never are.
    """
    index = faiss.IndexFlatL2(distinct.shape[1])
    index.add(distinct)
    queries = np.arange(len(distinct))
    nearest = np.full(len(distinct), -1, dtype=np.int64)
    distance = np.full(len(distinct), np.nan, dtype=np.float64)
    k = min(len(distinct), _CANDIDATES)
    while len(queries):
        found_distances, found_labels = index.search(distinct[queries], k)
        best_label, best_distance = _closest_other(found_distances, found_labels, queries)
        nearest[queries], distance[queries] = best_label, best_distance
        if k == len(distinct):
            break
        queries = queries[found_distances[:, -1] <= best_distance]
        k = min(len(distinct), 4 * k)
    return nearest, distance


def _closest_other(
    distances: np.ndarray, labels: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pick, per query, the nearest label other than the query itself.

    ``labels[q]`` holds the nearest vectors of vector ``queries[q]`` (``-1`` padding is
    ignored). Among equal distances the lower label wins.
    """
    usable = (labels != queries[:, None]) & (labels >= 0)
    masked = np.where(usable, distances.astype(np.float64), np.inf)
    best_distance = masked.min(axis=1)
    tied = usable & (masked == best_distance[:, None])
    best_label = np.where(tied, labels, np.iinfo(np.int64).max).min(axis=1)
    found = np.isfinite(best_distance)
    return np.where(found, best_label, -1), np.where(found, best_distance, np.nan)


def rank_uniqueness(neighbours: pd.DataFrame, files: list[str]) -> pd.DataFrame:
    """Turn ``nearest_distinct_neighbours`` output into the uniqueness ranking.

    Args:
        neighbours: the DataFrame from :func:`nearest_distinct_neighbours`.
        files: the image file names, one per row of ``neighbours``.

    Returns:
        Columns ``rank, file, nearest_file, distance, duplicates``, sorted by distance from
        the largest (rank 1, the most unique flake) down. Flakes with no distinct neighbour
        come last with an empty ``nearest_file``; equal distances are ordered by file name.
    """
    if len(files) != len(neighbours):
        raise ValueError(f"got {len(files)} file names for {len(neighbours)} rows of neighbours")
    files = np.asarray(files, dtype=object)
    nearest = neighbours["nearest"].to_numpy()
    table = pd.DataFrame(
        {
            "file": files,
            "nearest_file": np.where(nearest >= 0, files[np.maximum(nearest, 0)], ""),
            "distance": neighbours["distance"].to_numpy(dtype=np.float64),
            "duplicates": neighbours["duplicates"].to_numpy(dtype=np.int64),
        }
    )
    table = table.sort_values(
        ["distance", "file"], ascending=[False, True], na_position="last", kind="stable"
    ).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def find_near_duplicates(ranking: pd.DataFrame, ratio: float = 0.05) -> pd.DataFrame:
    """Pairs of different flakes that are suspiciously close: likely copies of one photo.

    A pair is listed when its distance is below ``ratio`` times the median nearest-neighbour
    distance (a re-encoded or slightly cropped copy of a photo lands there). Each pair is
    listed once, closest first, with columns ``file, nearest_file, distance, ratio_to_median``.
    They are reported, not removed: whether they are the same snowflake is the reader's call.
    """
    median = ranking["distance"].median()
    columns = ["file", "nearest_file", "distance", "ratio_to_median"]
    if not np.isfinite(median) or median <= 0:
        return pd.DataFrame(columns=columns)
    close = ranking[ranking["distance"] < ratio * median]
    pairs = close.assign(
        pair=[tuple(sorted(p)) for p in zip(close["file"], close["nearest_file"], strict=True)]
    ).drop_duplicates("pair")
    pairs = pairs.assign(ratio_to_median=pairs["distance"] / median)
    return pairs.sort_values(["distance", "file"])[columns].reset_index(drop=True)
