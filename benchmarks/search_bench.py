"""Search: the original per-image loop, ``nearest_distinct_neighbours`` and a bare FAISS search.

All three take turns in this one process on the same synthetic features, shaped like VGG16's
block5_conv3 output at 224 x 224 (100,352 non-negative float32 values per image), with a few
exact copies planted.
"""

from __future__ import annotations

import faiss
import numpy as np
from common import interleaved, log, summary

from snowflake_tools import search

#: Exact copies planted in the features: (original row, copy rows ...).
PLANTED_COPIES = ((3, 17), (8, 29), (12, 21, 36))
MIN_ROWS = 1 + max(max(group) for group in PLANTED_COPIES)


def make_features(n: int, d: int, seed: int = 0, clusters: int = 32) -> np.ndarray:
    """``(n, d)`` float32 rows: ReLU'd points around ``clusters`` centres, copies planted."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    features = np.empty((n, d), dtype=np.float32)
    for row in range(n):  # one row at a time keeps the temporaries small
        noise = rng.standard_normal(d, dtype=np.float32) * rng.uniform(0.3, 1.0)
        np.maximum(centres[rng.integers(clusters)] + noise, 0.0, out=features[row])
    for source, *copies in PLANTED_COPIES:
        features[copies] = features[source]
    return features


def original_loop(features: np.ndarray, queries: int) -> int:
    """THE ORIGINAL TUTORIAL'S WAY: one ``index.search`` per image, k = 2 (3 after a copy).

    Runs the first ``queries`` rows and returns how many searches it made.
    """
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(features)
    calls = 0
    for i in range(queries):
        distances, _ = index.search(features[i : i + 1], 2)
        calls += 1
        if distances[0, 1] == 0:  # the second hit is a copy: ask for a third
            index.search(features[i : i + 1], 3)
            calls += 1
    return calls


def bare_search(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least any exact search can do: one ``IndexFlatL2``, add, one batched search."""
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(features)
    return index.search(features, search.CANDIDATES)


def same_distances(features: np.ndarray, rtol: float = 1e-4) -> bool:
    """Whether the project and the bare search find the same nearest distances.

    Compared on the rows without copies: the bare search's nearest other row of a copy is
    its twin, which the project rightly skips.
    """
    project = search.nearest_distinct_neighbours(features)["distance"].to_numpy()
    distances, labels = bare_search(features)
    own = labels == np.arange(len(features))[:, None]
    nearest_other = np.where(own, np.inf, distances).min(axis=1)
    single = ~has_copy(features)
    return bool(np.allclose(project[single], nearest_other[single], rtol=rtol))


def has_copy(features: np.ndarray) -> np.ndarray:
    """Which rows have an exact copy elsewhere in ``features``."""
    groups = search.exact_duplicate_groups(features)
    return np.bincount(groups)[groups] > 1


def bench_search(sizes: tuple[int, ...], d: int, max_queries: int, rounds: int) -> list[dict]:
    """Median and spread of the three searches at each n, taking turns for ``rounds`` rounds.

    The original loop runs on at most ``max_queries`` rows; its time is scaled to all n by the
    number of searches (a flat-index search reads the whole index whatever the query).
    """
    log(f"search: making {max(sizes)} x {d} features")
    all_features = make_features(max(sizes), d)
    rows = []
    for n in sizes:
        features = all_features[:n]
        queries = min(n, max_queries)
        copied = has_copy(features)
        scale = (n + copied.sum()) / (queries + copied[:queries].sum())  # searches made
        log(f"search n={n}: {rounds} rounds of original loop ({queries} queries), project, bare")
        search.nearest_distinct_neighbours(features)  # warm-up: BLAS buffers and threads
        bare_search(features)
        times = interleaved(
            {
                "original": lambda f=features, q=queries: original_loop(f, q),
                "project": lambda f=features: search.nearest_distinct_neighbours(f),
                "bare": lambda f=features: bare_search(f),
            },
            rounds,
        )
        rows.append(
            {
                "n": n,
                "d": d,
                "queries_timed": queries,
                "original": summary([float(seconds * scale) for seconds in times["original"]]),
                "project": summary(times["project"]),
                "bare": summary(times["bare"]),
                "same_distances": same_distances(features),
            }
        )
        medians = (f"{name} {rows[-1][name]['median']:.2f} s" for name in times)
        log(f"search n={n}: medians {', '.join(medians)}")
    return rows
