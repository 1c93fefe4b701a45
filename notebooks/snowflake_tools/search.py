"""Nearest neighbours that are not exact copies, with one batched FAISS search.

Notebook 02, step 5, runs these steps one cell at a time: group the exact copies
(:func:`group_copies`), put each distinct vector once into a ``faiss.IndexFlatL2``
(:func:`index_of_distinct`), search every flake in one batched call, drop each group's own hit
(:func:`closest_others`) and spread the answers back over the copies
(:func:`neighbours_per_row`). :func:`nearest_distinct_neighbours` is those same steps in one
call; :func:`knn_uniqueness` (notebook 03) averages over ``k``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple

import faiss
import numpy as np
import pandas as pd

#: Neighbours asked for per distinct vector: itself plus a few spare for ties.
CANDIDATES = 4

#: Values per row compared first when looking for exact copies: rows that differ there cannot
#: be copies; rows that agree are then compared in full.
_SAMPLED_VALUES = 256

#: Largest squared length of a row for which every squared distance fits in float32:
#: ``|a - b|^2 <= 2 |a|^2 + 2 |b|^2``.
_MAX_SQUARED_LENGTH = float(np.finfo(np.float32).max) / 4


#: Pairs closer than this fraction of the median nearest-neighbour distance are reported as
#: near-duplicates (notebook 02's ``NEAR_DUPLICATE_RATIO``; notebook 04 uses this default).
NEAR_DUPLICATE_RATIO = 0.05

#: What to say when every flake is an exact copy of every other (``n``: how many there are).
NO_DISTINCT_NEIGHBOUR = (
    "No flake has a distinct neighbour: all {n} images are exact copies of one picture,\n"
    "so there is nothing to rank. Add different snowflake photos and run again."
)


class Copies(NamedTuple):
    """What :func:`group_copies` returns.

    Attributes:
        groups: int array ``(n,)``: ``groups[i] == groups[j]`` exactly when rows ``i`` and
            ``j`` are equal; groups are numbered in order of their first row.
        first_rows: int array ``(n_groups,)``, the first row of each group: its distinct
            vector is ``features[first_rows[g]]``.
        extra_rows: int array, the rows that repeat an earlier row (empty when none do).
    """

    groups: np.ndarray
    first_rows: np.ndarray
    extra_rows: np.ndarray


def check_features(features: np.ndarray) -> np.ndarray:
    """``features`` as a C-contiguous float32 matrix, or a ValueError saying what is wrong.

    No copy is made when the input already is one. Values are checked after the conversion to
    float32, so a float64 value too large for float32 is caught too, and so are values whose
    squared distances would overflow float32 (FAISS computes in float32).
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(
            f"features must be a 2-D array (images x values), got shape {features.shape}; "
            "flatten each image's feature map into one row first."
        )
    with np.errstate(over="ignore"):  # too large for float32 becomes infinity: caught below
        features = np.ascontiguousarray(features, dtype=np.float32)
    # One pass over the matrix: a NaN or infinity makes its row's squared length non-finite.
    with np.errstate(over="ignore", invalid="ignore"):
        squared_lengths = np.einsum("ij,ij->i", features, features)
    bad = np.flatnonzero(~np.isfinite(squared_lengths) | (squared_lengths > _MAX_SQUARED_LENGTH))
    if len(bad) == 0:
        return features
    not_finite = bad[~np.isfinite(features[bad]).all(axis=1)]
    if len(not_finite):
        raise ValueError(
            f"features rows {not_finite[:10].tolist()} contain NaN or infinity (after "
            "conversion to float32); check that those images loaded correctly."
        )
    raise ValueError(
        f"features rows {bad[:10].tolist()} hold values so large (up to "
        f"{np.abs(features[bad]).max():.3g}) that their squared distances overflow float32; "
        "scale the features down (divide them by a constant) before searching."
    )


def exact_duplicate_groups(features: np.ndarray) -> np.ndarray:
    """Label rows that hold identical vectors with the same group number.

    Returns an int array of length ``n``: ``groups[i] == groups[j]`` exactly when rows ``i``
    and ``j`` are equal element by element (``-0.0`` equals ``0.0``, as for distances).
    Groups are numbered by their first row. Rows are first sorted into buckets by a few
    sampled values, which only *proposes* copies; every copy is confirmed on the whole row.
    """
    features = np.asarray(features)
    n_rows = len(features)
    n_values = int(np.prod(features.shape[1:], dtype=np.int64))
    rows = features.reshape(n_rows, n_values)
    spread = np.linspace(0, n_values - 1, min(_SAMPLED_VALUES, n_values))
    samples = rows[:, np.unique(spread.astype(np.int64))] + 0  # + 0 turns -0.0 into 0.0
    buckets: dict[bytes, list[int]] = {}  # sampled values -> first rows of groups with them
    groups = np.empty(n_rows, dtype=np.int64)
    first_rows: list[int] = []
    for row, sample in enumerate(samples):
        bucket = buckets.setdefault(sample.tobytes(), [])
        first = next((f for f in bucket if np.array_equal(rows[f], rows[row])), None)
        if first is None:
            groups[row] = len(first_rows)
            first_rows.append(row)
            bucket.append(row)
        else:
            groups[row] = groups[first]
    return groups


def group_copies(features: np.ndarray) -> Copies:
    """Group the exact copies among the rows of ``features``: see :class:`Copies`."""
    groups = exact_duplicate_groups(features)
    first_rows = np.unique(groups, return_index=True)[1]
    extra_rows = np.setdiff1d(np.arange(len(groups)), first_rows, assume_unique=True)
    return Copies(groups, first_rows, extra_rows)


class Distinct(NamedTuple):
    """What :func:`distinct_rows` returns.

    Attributes:
        features: the checked float32 matrix (:func:`check_features`), one row per flake.
        copies: its exact copies grouped (:class:`Copies`).
        rows: each distinct vector once, ``features[copies.first_rows]``: row ``g`` is group
            ``g``.
    """

    features: np.ndarray
    copies: Copies
    rows: np.ndarray


def distinct_rows(features: np.ndarray) -> Distinct:
    """Check ``features``, group their exact copies and keep each distinct vector once."""
    features = check_features(features)
    copies = group_copies(features)
    return Distinct(features, copies, features[copies.first_rows])


def _index_distinct(features: np.ndarray) -> tuple[np.ndarray, Copies, faiss.IndexFlatL2]:
    """``(features, copies, index)``: :func:`distinct_rows` without the copy of the rows,
    the distinct vectors in an index instead (:func:`index_of_distinct`)."""
    features = check_features(features)
    copies = group_copies(features)
    return features, copies, index_of_distinct(features, copies)


def index_of_distinct(features: np.ndarray, copies: Copies) -> faiss.IndexFlatL2:
    """A ``faiss.IndexFlatL2`` holding each distinct vector once: label ``g`` is group ``g``.

    Every row is added, then the later copies are removed; FAISS renumbers the rows it keeps
    0, 1, 2 ... in order, so the label of a vector is its group. That costs less than copying
    the distinct vectors out first (the index's own storage is the only copy made).
    """
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(features)
    index.remove_ids(copies.extra_rows)
    return index


def closest_others(
    index: faiss.IndexFlatL2, distances: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's nearest hit other than itself, from ``index.search(distinct, k)``.

    ``index`` holds the distinct vectors and was searched with those same vectors, in order,
    so row ``q``'s own hit has label ``q``. Returns ``(nearest, distance)``: the label of the
    nearest other vector (``-1`` if none) and its squared L2 distance (float64, NaN if none).
    Among equal distances the lower label wins. A query whose ``k`` hits may end inside a tie
    (its last hit is as near as its best other one) is asked again with a larger ``k``.
    A mutual pair gets one distance (:func:`share_mutual_distances`).
    """
    nearest, distance = _best_other(distances, labels, np.arange(len(labels)))
    k = labels.shape[1]
    tied = np.flatnonzero(distances[:, -1] <= distance)
    while len(tied) and k < index.ntotal:  # rare: real features almost never tie
        k = min(index.ntotal, 4 * k)
        more_distances, more_labels = index.search(index.reconstruct_batch(tied), k)
        nearest[tied], distance[tied] = _best_other(more_distances, more_labels, tied)
        tied = tied[more_distances[:, -1] <= distance[tied]]
    return nearest, share_mutual_distances(nearest, distance)


def share_mutual_distances(nearest: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Give both flakes of a mutual pair (each the other's nearest) one distance: the smaller.

    The distance between two vectors is one number, but FAISS computes it once per query, and
    in its blocked matrix products the two results can differ in the last bit (for about one
    pair in twenty on some CPUs). Shared, the pair ties exactly, so it is ordered by file name
    on every machine and a one-bit difference is never taken for a close call. Returns a new
    float64 array; ``nearest`` is ``-1`` where a row has no neighbour.
    """
    nearest = np.asarray(nearest)
    distance = np.array(distance, dtype=np.float64)
    rows = np.arange(len(nearest))
    partner = np.where(nearest >= 0, nearest, rows)
    mutual = (nearest >= 0) & (nearest[partner] == rows)
    distance[mutual] = np.minimum(distance[mutual], distance[partner[mutual]])
    return distance


def _best_other(
    distances: np.ndarray, labels: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the nearest label other than ``queries[q]`` itself (``-1`` pads are ignored)."""
    usable = (labels != queries[:, None]) & (labels >= 0)
    masked = np.where(usable, distances.astype(np.float64), np.inf)
    best_distance = masked.min(axis=1)
    tied = usable & (masked == best_distance[:, None])
    best_label = np.where(tied, labels, np.iinfo(np.int64).max).min(axis=1)
    found = np.isfinite(best_distance)
    return np.where(found, best_label, -1), np.where(found, best_distance, np.nan)


def neighbours_per_row(copies: Copies, nearest: np.ndarray, distance: np.ndarray) -> pd.DataFrame:
    """Spread the answers for the distinct vectors back over every row, copies included.

    ``nearest`` and ``distance`` hold one value per distinct vector (:func:`closest_others`).
    Returns the DataFrame :func:`nearest_distinct_neighbours` describes.
    """
    groups, first_rows = copies.groups, copies.first_rows
    row_nearest = nearest[groups]
    return pd.DataFrame(
        {
            "nearest": np.where(row_nearest >= 0, first_rows[np.maximum(row_nearest, 0)], -1),
            "distance": distance[groups],
            "duplicates": np.bincount(groups)[groups] - 1,
        }
    ).astype({"nearest": np.int64, "distance": np.float64, "duplicates": np.int64})


def nearest_distinct_neighbours(features: np.ndarray) -> pd.DataFrame:
    """For every row, its nearest other row that is not an exact copy of it.

    Args:
        features: float array of shape ``(n_images, n_values)``, one image per row.

    Returns:
        A DataFrame with one row per input row, in input order, and columns

        - ``nearest``: row number of the nearest distinct vector, ``-1`` if there is none
          (every row is identical to this one);
        - ``distance``: squared L2 distance to it, as ``faiss.IndexFlatL2`` reports it
          (NaN if there is no distinct neighbour);
        - ``duplicates``: how many *other* rows are exact copies of this one.

    Copies are found by comparing the vectors themselves, never by a distance of zero (float
    error can give copies a tiny distance), and each group of copies is indexed once, so
    copies are never chosen and never crowd out the real neighbours. Among equally near
    vectors the lowest row wins. These are the steps of notebook 02, sections 4 and 5.
    """
    features, copies, index = _index_distinct(features)
    distances, labels = index.search(features, min(CANDIDATES, index.ntotal))
    first = copies.first_rows  # each group's answer is its first row's
    nearest, distance = closest_others(index, distances[first], labels[first])
    return neighbours_per_row(copies, nearest, distance)


def knn_uniqueness(features: np.ndarray, k: int) -> pd.DataFrame:
    """Mean squared L2 distance from every row to its ``k`` nearest distinct rows.

    The 1-NN score of notebook 02 is fooled by pairs: two near-copies of an odd flake are each
    other's nearest neighbour, so both look ordinary. Averaging over ``k`` neighbours asks
    whether the flake has *a few* look-alikes, not just one (notebook 03, step 6). Exact
    copies are handled as in :func:`nearest_distinct_neighbours`, with one batched search;
    with ``k = 1`` the two give the same result.

    Args:
        features: float array ``(n_images, n_values)``.
        k: neighbours to average over (1 or more); a row with fewer than ``k`` distinct other
            rows averages over those it has.

    Returns:
        A DataFrame that :func:`rank_uniqueness` accepts, one row per input row, columns
        ``nearest`` (the nearest distinct row, ``-1`` if none), ``distance`` (the mean of the
        ``k`` squared L2 distances, NaN if no distinct row) and ``duplicates``.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"K_NEIGHBOURS must be a whole number of 1 or more, got {k!r}.")
    features, copies, index = _index_distinct(features)
    usable_k = min(int(k), index.ntotal - 1)
    found = min(max(CANDIDATES, usable_k + 1), index.ntotal)
    distances, labels = index.search(features, found)
    distances, labels = distances[copies.first_rows], labels[copies.first_rows]
    nearest, distance = closest_others(index, distances, labels)
    if usable_k > 1:
        others = labels != np.arange(len(labels))[:, None]
        first_k = others & (np.cumsum(others, axis=1) <= usable_k)
        distance = np.where(first_k, distances.astype(np.float64), 0.0).sum(axis=1) / usable_k
    return neighbours_per_row(copies, nearest, distance)


def distinct_neighbours(features: np.ndarray, rows: Sequence[int], k: int) -> pd.DataFrame:
    """The ``k`` nearest distinct neighbours of each of ``rows``, by one batched FAISS search.

    Exact copies are grouped as in :func:`nearest_distinct_neighbours` (each group indexed
    once, by its first row), so neither a flake's copies nor a neighbour's copies take a
    place. The report shows each top flake beside these look-alikes. Returns a DataFrame with
    columns ``row``, ``neighbour`` (a row number), ``order`` (1 = nearest) and ``distance``
    (squared L2), at most ``k`` rows per query.
    """
    features, copies, index = _index_distinct(features)
    rows = np.asarray(rows, dtype=np.int64)
    distances, labels = index.search(features[rows], min(k + 1, index.ntotal))
    found = []
    for row, row_distances, row_labels in zip(rows, distances, labels, strict=True):
        others = [
            (label, distance)
            for label, distance in zip(row_labels, row_distances, strict=True)
            if label >= 0 and label != copies.groups[row]
        ]
        for order, (label, distance) in enumerate(others[:k], start=1):
            found.append((int(row), int(copies.first_rows[label]), order, float(distance)))
    return pd.DataFrame(found, columns=["row", "neighbour", "order", "distance"])


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
    return rank_by_distance(table)


def rank_by_distance(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` sorted by ``distance``, largest first, with a ``rank`` column 1, 2, 3 ...

    Equal distances go by file name, so the ranking never depends on the order of the files;
    a flake without a distinct neighbour (NaN) comes last. Notebook 02, step 6, shows this.
    """
    ranked = table.sort_values(
        ["distance", "file"], ascending=[False, True], na_position="last", kind="stable"
    ).reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked


def find_near_duplicates(
    ranking: pd.DataFrame, ratio: float = NEAR_DUPLICATE_RATIO
) -> pd.DataFrame:
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
