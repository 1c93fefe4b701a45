"""Uniqueness at scale: a FAISS index chosen by size, and an exact top-N that is certified.

Notebook 04 explains the ideas, the index in step 5 and the certificate in step 6; this module
runs them for any number of rows.

An approximate index (IVF, HNSW) may miss a flake's true nearest neighbour, but whatever it
returns is a real other flake, so its distance can only be *larger* than the exact one: an
approximate score over-estimates uniqueness, never under-estimates it. :func:`certify_top`
turns that one-sided error into a guarantee for the top of the ranking.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import time
from typing import NamedTuple

import faiss
import numpy as np
import pandas as pd
from faiss.contrib.big_batch_search import big_batch_search

from snowflake_tools import search

#: Index kinds the notebook's ``INDEX`` parameter accepts.
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
#: Up to this many distinct rows ``"auto"`` keeps exact search: its n^2 work is still seconds
#: (10,000 rows of 512 values: 0.7 s on 2 cores against IVF's 0.4 s; make bench-scale).
FLAT_MAX_ROWS = 20_000
#: IVF cells per square root of the row count, and the cells searched per query. Measured on
#: clustered 512-value rows at 100,000: nprobe 4 finds 97 % of nearest neighbours, 8 all of
#: them, at a cost that grows with nprobe; 8 keeps 1,000,000 rows within minutes on 2 cores.
IVF_CELLS_PER_SQRT_N = 4
IVF_NPROBE = 8
#: HNSW links per node and search breadth (kept for comparison in ``make bench-scale``).
HNSW_LINKS, HNSW_EF_SEARCH = 32, 128
#: Training rows per IVF cell: enough for k-means to place the cells, cheap even at 1M rows.
IVF_TRAIN_PER_CELL = 64
#: Queries per brute-force block: bounds the distance block held in memory.
BLOCK_ROWS = 4096
#: An IVF search of at least this many queries per cell goes cell by cell (FAISS's
#: ``big_batch_search``): each cell's rows are read once for all the queries that probe it, and
#: compared with them in one matrix product. Searching every one of 1,000,000 rows, that took
#: 44 s instead of 147 s query by query, same neighbours (``make bench-scale``).
BIG_BATCH_QUERIES_PER_CELL = 4
#: Relative float slack in the certificate: approximate and exact searches compute the same
#: distance in different orders, which may differ in the last bits.
FLOAT_SLACK = 1e-5


def choose_index(n_rows: int, kind: str = "auto", nprobe: int | None = None) -> dict:
    """The index settings for ``n_rows`` distinct rows: ``{"kind": ..., <its settings>}``.

    ``"auto"`` picks ``"flat"`` (exact) up to :data:`FLAT_MAX_ROWS` rows and ``"ivf"`` beyond;
    ``"flat"``, ``"ivf"`` and ``"hnsw"`` force one. ``nprobe`` overrides IVF's cells per query.
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"INDEX must be one of {', '.join(map(repr, INDEX_KINDS))}, got {kind!r}.")
    if kind == "auto":
        kind = "flat" if n_rows <= FLAT_MAX_ROWS else "ivf"
    if kind == "flat":
        return {"kind": "flat"}
    if kind == "hnsw":
        return {"kind": "hnsw", "links": HNSW_LINKS, "ef_search": HNSW_EF_SEARCH}
    # k-means wants about 39 training rows per cell; fewer cells than that would be noise.
    cells = max(1, min(round(IVF_CELLS_PER_SQRT_N * math.sqrt(n_rows)), n_rows // 39))
    return {"kind": "ivf", "cells": cells, "nprobe": min(cells, nprobe or IVF_NPROBE)}


def build_index(vectors: np.ndarray, settings: dict, seed: int = 0) -> faiss.Index:
    """A FAISS index of ``vectors`` (float32, one row each) built as ``settings`` say."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dimension = vectors.shape[1]
    if settings["kind"] == "flat":
        index = faiss.IndexFlatL2(dimension)
    elif settings["kind"] == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, settings["links"])
        index.hnsw.efSearch = settings["ef_search"]
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dimension), dimension, settings["cells"])
        sample = np.random.default_rng(seed).permutation(len(vectors))
        sample = sample[: IVF_TRAIN_PER_CELL * settings["cells"]]
        index.cp.seed = seed
        index.cp.max_points_per_centroid = IVF_TRAIN_PER_CELL
        index.train(vectors[np.sort(sample)])
        index.nprobe = settings["nprobe"]
    index.add(vectors)
    return index


class BruteForce:
    """Exact search over ``vectors`` without copying them into an index (``faiss.knn``).

    Has the ``search(queries, k)`` of a FAISS index, so :func:`knn_scores` takes either.
    """

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances and row numbers of each query's ``k`` nearest rows."""
        return faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), self.vectors, k)


def knn_scores(
    index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's nearest other row and mean squared L2 distance to its ``k`` nearest others.

    Args:
        index: an index holding ``vectors`` (all rows distinct), or :class:`BruteForce`.
        vectors: the indexed rows, float32 ``(n, d)``.
        queries: row numbers to score, int array.
        k: neighbours to average over, 1 or more; a row with fewer distinct others uses
            those it has.

    Returns:
        ``(nearest, scores)``: int64 row of the nearest other (``-1`` if none found) and the
        float64 mean distance (``inf`` when the index returned fewer than ``k`` others, an
        honest "unknown" that the certificate treats as possibly huge).
    """
    if k < 1:
        raise ValueError(f"k must be 1 or more (the neighbours a score averages), got {k}.")
    queries = np.asarray(queries, dtype=np.int64)
    k = min(k, len(vectors) - 1)
    if k < 1:
        return np.full(len(queries), -1, dtype=np.int64), np.full(len(queries), np.nan)
    return scores_from_neighbours(queries, *search_rows(index, vectors, queries, k + 1), k)


def scores_from_neighbours(
    queries: np.ndarray, distances: np.ndarray, labels: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn_scores` from a search's ``k + 1`` nearest rows of each query (self included)."""
    others = (labels != queries[:, None]) & (labels >= 0)
    first_k = others & (np.cumsum(others, axis=1) <= k)
    total = np.where(first_k, distances.astype(np.float64), 0.0).sum(axis=1)
    scores = np.where(first_k.sum(axis=1) == k, total / k, np.inf)
    first_other = labels[np.arange(len(queries)), others.argmax(axis=1)]
    nearest = np.where(others.any(axis=1), first_other, -1).astype(np.int64)
    return nearest, scores


def search_rows(
    index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(vectors[queries], k)``, done the fastest way for the index and the load.

    An IVF index asked about many rows is searched cell by cell with FAISS's own
    ``big_batch_search`` (see :data:`BIG_BATCH_QUERIES_PER_CELL`), which finds the same
    neighbours; anything else is searched :data:`BLOCK_ROWS` queries at a time, so that no
    more than one block of queries is ever copied.
    """
    everything = len(queries) == len(vectors) and np.array_equal(queries, np.arange(len(vectors)))
    if isinstance(index, faiss.IndexIVFFlat) and (
        len(queries) >= BIG_BATCH_QUERIES_PER_CELL * index.nlist
    ):
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per cell
            return big_batch_search(index, vectors if everything else vectors[queries], k)
    distances = np.empty((len(queries), k), dtype=np.float32)
    labels = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), BLOCK_ROWS):
        block = slice(start, start + BLOCK_ROWS)
        distances[block], labels[block] = index.search(vectors[queries[block]], k)
    return distances, labels


@dataclasses.dataclass
class Certified:
    """What :func:`certify_top` returns.

    Attributes:
        nearest, scores: per distinct row, the nearest other row and the score (exact for the
            rows in ``exact_rows``, approximate, never smaller than exact, for the others).
        exact_rows: rows whose score was recomputed by brute force (the final ``K`` of them).
        candidates_checked: the candidates re-scored exactly in the round that was accepted.
        rounds: how many times ``K`` was tried (it doubles each time the bound fails).
        bound: the ``K``-th largest approximate score; every row outside scores at most this.
        top_n: the ranks made exact: ``1`` to ``top_n`` (never more than there are rows).
        top_n_exact: the ``top_n``-th largest exact score; it must exceed ``bound``.
        seconds: wall time of the certification.
    """

    nearest: np.ndarray
    scores: np.ndarray
    exact_rows: np.ndarray
    candidates_checked: int
    rounds: int
    bound: float
    top_n: int
    top_n_exact: float
    seconds: float

    @property
    def holds(self) -> bool:
        """Whether the certificate holds: the top-N has real scores (no row without a
        neighbour, no NaN), and every row was checked or the bound lies below the top-N."""
        scored = (
            math.isfinite(self.top_n_exact) and not np.isnan(self.scores[self.exact_rows]).any()
        )
        everything = self.candidates_checked >= len(self.scores)
        return bool(scored and (everything or self.bound * (1 + FLOAT_SLACK) < self.top_n_exact))

    def summary(self) -> str:
        """One line saying whether the certificate holds, with its numbers."""
        if not self.holds:
            return (
                f"NOT certified: the top {self.top_n} has no real scores, or the bound "
                f"{self.bound:.4g} is not below the exact score of rank {self.top_n} "
                f"({self.top_n_exact:.4g})"
            )
        return (
            f"certified with {self.candidates_checked} candidates checked after {self.rounds} "
            f"round(s): bound "
            f"{self.bound:.4g} < exact score of rank {self.top_n} {self.top_n_exact:.4g}, "
            f"{self.seconds:.2f} s"
        )


def certify_top(
    vectors: np.ndarray,
    nearest: np.ndarray,
    scores: np.ndarray,
    top_n: int,
    k_neighbours: int = 1,
    start_k: int | None = None,
    exact_knn=None,
) -> Certified:
    """Make the ``top_n`` highest scores exact, with a proof that no other row belongs there.

    Take the ``K`` rows with the largest approximate scores and recompute their scores exactly
    against all rows (batched brute force). Every row outside them has an exact score at most
    its approximate score, which is at most the ``K``-th largest approximate score. So when
    that bound is below the ``top_n``-th largest exact score among the ``K``, no outside row
    can enter the exact top ``top_n``: accept. Otherwise double ``K`` and try again (at worst
    ``K`` reaches every row, which is brute force).

    Args:
        vectors: the distinct rows, float32 ``(n, d)``.
        nearest, scores: :func:`knn_scores` of every row with an approximate index.
        top_n: how many of the highest scores must be exact (1 or more); more than there are
            rows makes all of them exact, and the record says how many (``top_n``).
        k_neighbours: the ``k`` of the scores (1 = nearest distinct neighbour, or more).
        start_k: the first ``K`` (default: ``2 * top_n``, at least 100).
        exact_knn: ``rows -> (nearest, scores)``, exact; default: brute force over
            ``vectors``. ``sharded_search`` passes one that asks every shard (``vectors=None``).

    Raises ValueError for a ``top_n`` or ``k_neighbours`` below 1: without neighbours there
    are no scores, and a ranking without scores is never certified.
    """
    if top_n < 1 or k_neighbours < 1:
        raise ValueError(
            f"certify_top needs top_n and k_neighbours of 1 or more, got {top_n} and "
            f"{k_neighbours}: without neighbours there is no score to certify."
        )
    started = time.perf_counter()
    n = len(scores)
    top_n = min(top_n, n)
    nearest, scores = nearest.copy(), np.asarray(scores, dtype=np.float64).copy()
    if exact_knn is None:
        exact_index = BruteForce(vectors)

        def exact_knn(rows):
            return knn_scores(exact_index, vectors, rows, k_neighbours)

    exact = np.zeros(n, dtype=bool)

    def rescore(rows: np.ndarray) -> None:
        """Make the scores of ``rows`` exact, in place; rows already exact are skipped."""
        todo = rows[~exact[rows]]
        nearest[todo], scores[todo] = exact_knn(todo)
        exact[todo] = True

    candidates_checked, rounds, bound, top_n_exact = double_until_certified(
        scores, rescore, top_n, start_k or max(100, 2 * top_n)
    )
    if k_neighbours == 1:  # a mutual pair's one distance, computed twice, may differ by a bit
        scores = search.share_mutual_distances(nearest, scores)
    return Certified(
        nearest=nearest,
        scores=scores,
        exact_rows=np.flatnonzero(exact),
        candidates_checked=int(candidates_checked),
        rounds=rounds,
        bound=float(bound),
        top_n=int(top_n),
        top_n_exact=top_n_exact,
        seconds=time.perf_counter() - started,
    )


def double_until_certified(
    scores: np.ndarray, rescore, top_n: int, k: int
) -> tuple[int, int, float, float]:
    """The certificate's loop (notebook 04, step 6): ``(candidates, rounds, bound, top_n_exact)``.

    ``scores`` are approximate (never too small); ``rescore(rows)`` makes theirs exact, in place.
    NaN (no neighbour at all) sorts last.
    """
    rounds = 0
    while True:
        rounds, k = rounds + 1, min(k, len(scores))
        order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")  # largest first
        rescore(order[:k])  # the K candidates, exactly
        # Every row outside the K scores exactly at most its approximate score, at most this:
        bound = -np.inf if k == len(scores) else float(np.nan_to_num(scores[order[k]]))
        top_n_exact = float(np.sort(np.nan_to_num(scores[order[:k]], nan=-np.inf))[-top_n])
        if k == len(scores) or bound * (1 + FLOAT_SLACK) < top_n_exact:
            return k, rounds, bound, top_n_exact
        k *= 2


def recall_at_1(
    vectors: np.ndarray, approximate_nearest: np.ndarray, sample_size: int = 1000, seed: int = 0
) -> tuple[float, int]:
    """Share of sampled rows whose approximate nearest other row is the exact one.

    A row counts as found when the approximate neighbour is as near as the exact one (a tie
    with another row is not a miss). Returns ``(recall, rows sampled)``; all rows are sampled
    when there are at most ``sample_size``.
    """
    n = len(vectors)
    rng = np.random.default_rng(seed)
    sample = np.arange(n) if n <= sample_size else np.sort(rng.choice(n, sample_size, False))
    exact_nearest, _ = knn_scores(BruteForce(vectors), vectors, sample, 1)
    found = approximate_nearest[sample]
    exact_distance = _squared_distances(vectors, sample, exact_nearest)
    found_distance = _squared_distances(vectors, sample, found)
    hits = (found >= 0) & (found_distance <= exact_distance * (1 + FLOAT_SLACK))
    return float(hits.mean()) if len(sample) else 1.0, len(sample)


def _squared_distances(vectors: np.ndarray, rows: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Squared L2 distance from each ``rows[i]`` to ``others[i]`` (inf where ``others < 0``)."""
    difference = vectors[rows].astype(np.float64) - vectors[np.maximum(others, 0)]
    return np.where(others >= 0, (difference**2).sum(axis=1), np.inf)


@dataclasses.dataclass
class ScaleResult:
    """What :func:`rank_at_scale` returns.

    Attributes:
        neighbours: per input row ``nearest, distance, duplicates``, as
            ``search.nearest_distinct_neighbours`` gives (``distance`` is the k-NN mean).
        settings: the index settings used (see :func:`choose_index`).
        certified: the :class:`Certified` record of the exact top-N.
        n_distinct: rows left after merging exact copies.
        index_seconds, search_seconds: time to build the index and to search all rows.
        approximate_nearest: per distinct row, the nearest other row the index found, before
            the certificate made the top exact (for :func:`recall_at_1`).
    """

    neighbours: pd.DataFrame
    settings: dict
    certified: Certified
    n_distinct: int
    index_seconds: float
    search_seconds: float
    approximate_nearest: np.ndarray


def rank_at_scale(
    features: np.ndarray,
    kind: str = "auto",
    top_n: int = 100,
    k_neighbours: int = 1,
    nprobe: int | None = None,
) -> tuple[ScaleResult, faiss.Index, np.ndarray]:
    """Score every row by its ``k_neighbours`` nearest distinct rows, with a certified top-N.

    Exact copies are merged first, by value (as ``search.nearest_distinct_neighbours`` does),
    so a copy is never anyone's neighbour. Then one index of the distinct rows, one batched
    search of all of them, and :func:`certify_top`. Returns the :class:`ScaleResult`, the index
    and the distinct rows (for :func:`recall_at_1`).
    """
    _, copies, distinct = search.distinct_rows(features)
    settings = choose_index(len(distinct), kind, nprobe)
    started = time.perf_counter()
    index = build_index(distinct, settings)
    index_seconds = time.perf_counter() - started
    started = time.perf_counter()
    nearest, scores = knn_scores(index, distinct, np.arange(len(distinct)), k_neighbours)
    search_seconds = time.perf_counter() - started
    certified = certify_top(distinct, nearest, scores, top_n, k_neighbours)

    neighbours = search.neighbours_per_row(copies, certified.nearest, certified.scores)
    result = ScaleResult(
        neighbours, settings, certified, len(distinct), index_seconds, search_seconds, nearest
    )
    return result, index, distinct


class ScaleRun(NamedTuple):
    """Notebook 04's features and ranking in one precision: what its later cells read.

    A tuple, so ``precision, extraction, assembled, ... = run`` unpacks it. ``extraction``
    and ``assembled`` are ``ray_extract``'s records; ``nearest`` is each distinct row's
    approximate nearest other row, ``search_seconds`` the time to build the index and search.
    ``on_ray`` is the ``sharded_search.InListing`` of a search on Ray (None in this process).
    """

    precision: str
    extraction: object
    assembled: object
    distinct: np.ndarray
    settings: dict
    nearest: np.ndarray
    certified: Certified
    search_seconds: float
    ranking: pd.DataFrame
    on_ray: object = None


def rank_with_ray(
    paths: list,
    image_dir,
    results_dir,
    model_settings: dict,
    layer: str,
    feature_vector: str,
    batch_size: int,
    index_kind: str,
    top_n: int,
    k_neighbours: int,
    search_path: str,
    on_ray_options: dict,
    precision: str,
) -> ScaleRun:
    """Notebook 04's steps 2 to 7 in one call, in ``precision``.

    The extractor built from ``model_settings`` in that precision, the Ray extraction into
    shards of its own (a re-run finds them there), then :func:`rank_at_scale` in this process
    (``search_path`` ``"local"``), or ``sharded_search.rank_listing`` with ``on_ray_options``
    on Ray, the rows left in the shards.
    """
    from snowflake_tools import features, ray_extract, sharded_search  # only when asked

    settings = {**model_settings, "precision": precision}
    extractor = features.cut_at_layer(features.load_vgg16(**settings)[0], layer)
    extractor_args = dict(
        model_settings=settings,
        layer=layer,
        feature_vector=feature_vector,
        expected_fingerprint=features.fingerprint(extractor),
    )
    shards = ray_extract.shard_folder(
        results_dir, extractor, settings["image_size"], feature_vector
    )
    extraction = ray_extract.extract_to_shards(paths, image_dir, shards, extractor_args, batch_size)
    assembled = ray_extract.assemble(extraction.listing, shards, search_path == "local")
    precision = features.precision_of(extractor)
    if search_path == "local":
        at_scale, _, distinct = rank_at_scale(assembled.features, index_kind, top_n, k_neighbours)
        found = dict(distinct=distinct, settings=at_scale.settings,
                     nearest=at_scale.approximate_nearest, certified=at_scale.certified,
                     search_seconds=at_scale.index_seconds + at_scale.search_seconds,
                     neighbours=at_scale.neighbours, on_ray=None)  # fmt: skip
    else:
        on_ray = sharded_search.rank_listing(
            assembled.features, shards.parent, top_n, k_neighbours, **on_ray_options
        )
        found = dict(distinct=assembled.features.take(on_ray.copies.first_rows),
                     settings=on_ray.sharded.settings, nearest=on_ray.nearest,
                     certified=on_ray.certified, search_seconds=on_ray.sharded.search_seconds(),
                     neighbours=search.neighbours_per_row(on_ray.copies, on_ray.certified.nearest,
                                                          on_ray.certified.scores),
                     on_ray=on_ray)  # fmt: skip
    ranking = search.rank_uniqueness(found.pop("neighbours"), assembled.files)
    return ScaleRun(precision, extraction, assembled, ranking=ranking, **found)
