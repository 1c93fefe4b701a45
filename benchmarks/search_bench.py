"""Search: the original tutorial's one-image-at-a-time loop against nearest_distinct_neighbours.

Both run in this one process on the same synthetic features, shaped like VGG16's block5_conv3
output at 224 x 224 (100,352 non-negative values per image) with a few exact copies planted.
Two alternative implementations of the project's search are timed beside it, as candidates for
``snowflake_tools/search.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator, Sequence

import faiss
import numpy as np
import pandas as pd
from common import interleaved_times, log, seconds_of
from tqdm.auto import tqdm

from snowflake_tools import search

#: Exact copies planted in the features: (original row, copy rows...). The group of three is
#: where the original's duplicate handling gives up (its third hit is another copy).
PLANTED_COPIES = ((3, 17), (8, 29), (12, 21, 36))

#: The fewest rows a benchmark may use: every planted copy must be inside.
MIN_ROWS = 1 + max(max(group) for group in PLANTED_COPIES)

#: Two searches agree on a row when their distances differ by less than this, relatively.
#: FAISS computes a one-query search as a direct sum of squares but a batched one as
#: |x|^2 + |y|^2 - 2 x.y with a matrix product, so float32 rounding differs between them.
DISTANCE_RTOL = 1e-4


def make_features(n: int, d: int, seed: int = 0, clusters: int = 32) -> np.ndarray:
    """Synthetic float32 features of shape ``(n, d)``, standing in for flattened VGG16 maps.

    Rows are ReLU'd points (non-negative, about half zeros) scattered around ``clusters``
    centres, each at its own spread, so that distances vary and nearest neighbours are well
    defined rather than all nearly equal. The rows in :data:`PLANTED_COPIES` are exact copies.
    """
    if n < MIN_ROWS:
        raise ValueError(f"need at least {MIN_ROWS} rows to plant the copies, got n={n}")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    labels = rng.integers(clusters, size=n)
    spreads = rng.uniform(0.3, 1.0, size=n).astype(np.float32)
    features = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 256):  # blocks keep the temporaries small
        stop = min(n, start + 256)
        block = rng.standard_normal((stop - start, d), dtype=np.float32)
        block *= spreads[start:stop, None]
        block += centres[labels[start:stop]]
        np.maximum(block, 0.0, out=block)
        features[start:stop] = block
    for source, *copies in PLANTED_COPIES:
        features[copies] = features[source]
    return features


@dataclasses.dataclass
class OriginalResult:
    """What :func:`original_tutorial_search` found for the rows it was asked about."""

    queries: np.ndarray  # rows searched, shape (q,)
    nearest: np.ndarray  # chosen neighbour of each query row, shape (q,)
    distance: np.ndarray  # its squared L2 distance, shape (q,)
    calls: int  # index.search calls made (1 per query, 2 when the second hit was a copy)
    build_seconds: float  # IndexFlatL2 construction and add
    loop_seconds: float  # the search loop over ``queries``
    call_seconds: np.ndarray  # wall time of each index.search call, shape (calls,)


def original_tutorial_search(
    features: np.ndarray, queries: Sequence[int], progress: bool = True
) -> OriginalResult:
    """THE ORIGINAL TUTORIAL'S WAY, kept as it was: the baseline, not the project's method.

    One ``IndexFlatL2`` holds every row; each query row is searched on its own with ``k=2``
    (itself and its nearest other row) and, when that second hit is at distance 0 (an exact
    copy), searched again with ``k=3`` to take the third hit. Groups of three or more copies
    defeat it (the third hit is a copy too), and so would a copy whose float distance is not
    exactly 0; ``nearest_distinct_neighbours`` handles both.
    """
    index = faiss.IndexFlatL2(features.shape[1])
    build_seconds = seconds_of(lambda: index.add(features))
    queries = np.asarray(queries, dtype=np.int64)
    nearest = np.empty(len(queries), dtype=np.int64)
    distance = np.empty(len(queries), dtype=np.float64)
    call_seconds: list[float] = []

    def timed_search(i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        found = index.search(features[i : i + 1], k)
        call_seconds.append(time.perf_counter() - started)
        return found

    def loop() -> None:
        for position, i in enumerate(tqdm(queries, desc="  original loop", disable=not progress)):
            found_distances, found_labels = timed_search(i, 2)
            if found_distances[0, 1] == 0:  # the second hit is a copy: ask for a third
                found_distances, found_labels = timed_search(i, 3)
                nearest[position] = found_labels[0, 2]
                distance[position] = found_distances[0, 2]
            else:
                nearest[position] = found_labels[0, 1]
                distance[position] = found_distances[0, 1]

    loop_seconds = seconds_of(loop)
    return OriginalResult(
        queries,
        nearest,
        distance,
        len(call_seconds),
        build_seconds,
        loop_seconds,
        np.array(call_seconds),
    )


def search_calls_of_original(features: np.ndarray) -> int:
    """How many ``index.search`` calls the original loop makes over all rows of ``features``.

    One per row, plus one more for every row that has an exact copy (its second hit is at
    distance 0). Used to scale a loop timed on a subset of the queries up to all of them.
    """
    groups = search.exact_duplicate_groups(features)
    return len(features) + int((np.bincount(groups)[groups] > 1).sum())


def exact_duplicate_groups_sampled(features: np.ndarray, samples: int = 1024) -> np.ndarray:
    """Candidate for ``search.exact_duplicate_groups``: the same labels, without hashing rows.

    Hashing every value of every row (400 KB per image) costs about as much as the search
    itself. Copies must agree on any sample of their values, so rows are first bucketed by
    ``samples`` evenly spaced values (-0.0 folded into 0.0) and only rows sharing a bucket are
    compared in full, with ``==`` (which treats -0.0 and 0.0 as equal). Distinct images almost
    never share a bucket, so nearly all the work is reading 1,024 values per row.
    """
    rows = np.ascontiguousarray(features, dtype=np.float32)
    columns = np.unique(np.linspace(0, rows.shape[1] - 1, samples).astype(np.int64))
    keys = rows[:, columns] + np.float32(0.0)
    buckets: dict[bytes, list[tuple[int, int]]] = {}  # key -> [(first row, group), ...]
    groups = np.empty(len(rows), dtype=np.int64)
    n_groups = 0
    for i, key in enumerate(keys):
        bucket = buckets.setdefault(key.tobytes(), [])
        for first_row, group in bucket:
            if np.array_equal(rows[first_row], rows[i]):
                groups[i] = group
                break
        else:
            groups[i] = n_groups
            bucket.append((i, n_groups))
            n_groups += 1
    return groups


def search_distinct_gram(distinct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate for ``search._search_distinct``: nearest other row from the Gram matrix.

    ``distinct @ distinct.T`` is one BLAS ``syrk`` call in numpy, which computes only half of
    the symmetric product: half the floating-point work of FAISS's general matrix product of
    the queries against the index. Distances come out as FAISS computes them in a batch
    (``|x|^2 + |y|^2 - 2 x.y``, clamped at 0); among equal distances the lower row wins.
    The whole ``n x n`` matrix is held (16 MB at n = 2,000); beyond some 10,000 images it
    would be computed in blocks of rows.
    """
    squared = np.einsum("ij,ij->i", distinct, distinct)
    distances = distinct @ distinct.T
    distances *= -2.0
    distances += squared[:, None]
    distances += squared[None, :]
    np.maximum(distances, 0.0, out=distances)
    np.fill_diagonal(distances, np.inf)
    nearest = distances.argmin(axis=1)  # argmin returns the first, i.e. lowest, of ties
    return nearest, distances[np.arange(len(distinct)), nearest].astype(np.float64)


@contextlib.contextmanager
def patched(**replacements: Callable) -> Iterator[None]:
    """Temporarily replace functions of ``snowflake_tools.search`` by name."""
    saved = {name: getattr(search, name) for name in replacements}
    try:
        for name, function in replacements.items():
            setattr(search, name, function)
        yield
    finally:
        for name, function in saved.items():
            setattr(search, name, function)


#: Alternatives to time beside the project's search: label -> replacements in search.py.
VARIANTS: dict[str, dict[str, Callable]] = {
    "copies found by sampled values": {
        "exact_duplicate_groups": exact_duplicate_groups_sampled,
    },
}


def _agreement(ours: pd.DataFrame, original: OriginalResult, features: np.ndarray) -> dict:
    """Compare the distances both ways chose, on the rows where both are meant to agree.

    Rows in a group of three or more copies are left out and counted: there the original's
    third hit is another copy at distance 0, a known flaw, not a rounding difference.
    """
    groups = search.exact_duplicate_groups(features)
    group_sizes = np.bincount(groups)[groups]
    comparable = group_sizes[original.queries] <= 2
    ours_distance = ours["distance"].to_numpy()[original.queries][comparable]
    ours_nearest = ours["nearest"].to_numpy()[original.queries][comparable]
    theirs = original.distance[comparable]
    relative = np.abs(ours_distance - theirs) / np.maximum(np.abs(theirs), 1e-12)
    return {
        "distance_rtol": DISTANCE_RTOL,
        "rows_compared": int(comparable.sum()),
        "rows_agreeing": int((relative <= DISTANCE_RTOL).sum()),
        "rows_excluded": int((~comparable).sum()),
        "excluded_distances": sorted(set(original.distance[~comparable].round(6).tolist())),
        "max_relative_difference": float(relative.max()) if len(relative) else 0.0,
        "same_neighbour": int((ours_nearest == original.nearest[comparable]).sum()),
    }


def _same_answer(first: pd.DataFrame, second: pd.DataFrame) -> bool:
    """Whether two searches found neighbours at the same distances, with the same copy counts."""
    return bool(
        np.allclose(first["distance"], second["distance"], rtol=DISTANCE_RTOL, equal_nan=True)
        and (first["duplicates"].to_numpy() == second["duplicates"].to_numpy()).all()
    )


def benchmark_search(
    sizes: Sequence[int], d: int, max_queries: int, rounds: int, progress: bool = True
) -> list[dict]:
    """Time the original loop and ``nearest_distinct_neighbours`` for every n in ``sizes``.

    The original loop is timed on the first ``min(n, max_queries)`` rows (they hold every
    planted copy); its time for all n rows is the index build plus the median time of one
    ``index.search`` call times the calls it would make: a flat-index search reads the whole
    index, so it costs the same whatever the query. The project's search and its candidate
    replacements take turns for ``rounds`` rounds over all n rows; each reports its median.
    Medians on both sides: the typical cost, not the luckiest or the most disturbed one.
    """
    log(f"search: making {max(sizes)} x {d} synthetic features")
    all_features = make_features(max(sizes), d)
    rows = []
    for n in sizes:
        features = all_features[:n]
        queries = np.arange(min(n, max_queries))
        log(f"search n={n}: the original loop over {len(queries)} of {n} queries")
        original = original_tutorial_search(features, queries, progress)
        full_calls = search_calls_of_original(features)
        original_seconds = original.build_seconds + float(
            np.median(original.call_seconds) * full_calls
        )
        log(f"search n={n}: nearest_distinct_neighbours and candidates, {rounds} rounds")
        answers = {"project": search.nearest_distinct_neighbours(features)}
        candidates = {"project": lambda f=features: search.nearest_distinct_neighbours(f)}
        for label, replacements in VARIANTS.items():
            with patched(**replacements):
                answers[label] = search.nearest_distinct_neighbours(features)

            def run_variant(f=features, replacements=replacements) -> None:
                with patched(**replacements):
                    search.nearest_distinct_neighbours(f)

            candidates[label] = run_variant
        candidates["finding copies"] = lambda f=features: search.exact_duplicate_groups(f)
        times = {
            name: statistics.median(values)
            # computing the answers above was the warm-up
            for name, values in interleaved_times(candidates, rounds, warm_up=False).items()
        }
        ours, ours_seconds = answers["project"], times["project"]
        n_distinct = len(np.unique(search.exact_duplicate_groups(features)))
        rows.append(
            {
                "n": n,
                "d": d,
                "queries_timed": len(queries),
                "original_calls_timed": original.calls,
                "original_calls_full": full_calls,
                "original_seconds": original_seconds,
                "original_loop_seconds_timed": original.loop_seconds,
                "original_seconds_per_query": float(np.median(original.call_seconds)),
                "ours_seconds": ours_seconds,
                "grouping_seconds": times["finding copies"],
                "ours_gflops": 2 * n_distinct**2 * d / ours_seconds / 1e9,
                "speedup": original_seconds / ours_seconds,
                "variants": {
                    label: {
                        "seconds": times[label],
                        "same_answer": _same_answer(ours, answers[label]),
                    }
                    for label in VARIANTS
                },
                **_agreement(ours, original, features),
            }
        )
        log(
            f"search n={n}: original {original_seconds:.2f} s, ours {ours_seconds:.2f} s, "
            f"{original_seconds / ours_seconds:.1f}x"
        )
    return rows
