"""The certified top-N: equal to brute force even when the approximate index misses on purpose."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from helpers import assert_mutual_pairs_tie, rows_with_mutual_pairs

from snowflake_tools import ann, plots, search


def clustered_rows(n=3000, d=32, clusters=60, seed=0):
    """Clustered non-negative rows scaled to length 1, with planted outliers and exact copies."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, (clusters, d))
    rows = centres[rng.integers(0, clusters, n)] + rng.normal(0, 0.15, (n, d))
    rows[:10] = rng.gamma(1.0, 3.0, (10, d))  # planted outliers
    rows = np.abs(rows)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows[20:25] = rows[0]  # a group of copies of the top outlier
    rows[30:32] = rows[40]
    return rows.astype(np.float32)


def brute_force(rows, k):
    table = search.knn_uniqueness(rows, k)
    return search.rank_uniqueness(table, [f"f{i:05d}" for i in range(len(rows))])


def certified_ranking(rows, k, top_n, **options):
    result, _, _ = ann.rank_at_scale(rows, top_n=top_n, k_neighbours=k, **options)
    return result, search.rank_uniqueness(
        result.neighbours, [f"f{i:05d}" for i in range(len(rows))]
    )


@pytest.mark.parametrize("k", [1, 3])
def test_certified_top_n_equals_brute_force_despite_forced_misses(k):
    rows = clustered_rows()
    result, table = certified_ranking(rows, k, top_n=20, kind="ivf", nprobe=1)
    exact = brute_force(rows, k)

    # The approximate index really does miss: many rows got a larger score than exact.
    distinct = search.group_copies(rows).first_rows
    index = ann.build_index(rows[distinct], result.settings)
    _, approximate = ann.knn_scores(index, rows[distinct], np.arange(len(distinct)), k)
    exact_distinct = exact.set_index("file").loc[[f"f{i:05d}" for i in distinct], "distance"]
    misses = (approximate > exact_distinct.to_numpy() * (1 + 1e-5)).sum()
    assert misses > 100

    top = table.head(20)
    assert top["file"].tolist() == exact.head(20)["file"].tolist()
    assert top["nearest_file"].tolist() == exact.head(20)["nearest_file"].tolist()
    np.testing.assert_allclose(top["distance"], exact.head(20)["distance"], rtol=1e-5)
    assert result.certified.bound < result.certified.top_n_exact
    assert result.certified.holds
    assert result.certified.candidates_checked >= 20
    # Outside the exact rows, scores are over-estimates, never under-estimates.
    merged = table.merge(exact, on="file", suffixes=("", "_exact"))
    assert (merged["distance"] >= merged["distance_exact"] * (1 - 1e-5)).all()


def test_copies_are_never_chosen_and_are_counted():
    rows = clustered_rows()
    _, table = certified_ranking(rows, 1, top_n=10, kind="ivf", nprobe=1)
    by_file = table.set_index("file")
    copies_of_top = [f"f{i:05d}" for i in [0, *range(20, 25)]]
    for name in copies_of_top:
        assert by_file.loc[name, "nearest_file"] not in copies_of_top
        assert by_file.loc[name, "duplicates"] == 5
    assert (table["file"] != table["nearest_file"]).all()


def test_a_bad_start_doubles_k_until_the_bound_holds():
    rows = clustered_rows()
    distinct = search.group_copies(rows).first_rows
    vectors = rows[distinct]
    settings = ann.choose_index(len(vectors), "ivf", nprobe=1)
    index = ann.build_index(vectors, settings)
    nearest, scores = ann.knn_scores(index, vectors, np.arange(len(vectors)), 1)
    certified = ann.certify_top(vectors, nearest, scores, top_n=20, start_k=20)
    assert certified.rounds > 1
    assert certified.candidates_checked == 20 * 2 ** (
        certified.rounds - 1
    ) or certified.candidates_checked == len(vectors)
    exact = search.nearest_distinct_neighbours(vectors)["distance"].to_numpy()
    top = np.argsort(-certified.scores, kind="stable")[:20]
    assert set(top) == set(np.argsort(-exact, kind="stable")[:20])


def test_flat_index_is_exact_everywhere():
    rows = clustered_rows(n=500)
    result, table = certified_ranking(rows, 1, top_n=5, kind="flat")
    exact = brute_force(rows, 1)
    assert table["file"].tolist() == exact["file"].tolist()
    np.testing.assert_allclose(table["distance"], exact["distance"], rtol=1e-5)
    assert result.settings == {"kind": "flat"}


def test_recall_counts_misses():
    rows = clustered_rows()
    distinct = search.group_copies(rows).first_rows
    vectors = rows[distinct]
    index = ann.build_index(vectors, ann.choose_index(len(vectors), "ivf", nprobe=1))
    nearest, _ = ann.knn_scores(index, vectors, np.arange(len(vectors)), 1)
    recall, sampled = ann.recall_at_1(vectors, nearest, sample_size=1000)
    assert sampled == 1000
    assert 0.2 < recall < 0.99
    exact_nearest = search.nearest_distinct_neighbours(vectors)["nearest"].to_numpy()
    assert ann.recall_at_1(vectors, exact_nearest)[0] == 1.0


def test_choose_index():
    assert ann.choose_index(1000)["kind"] == "flat"
    big = ann.choose_index(1_000_000)
    assert big["kind"] == "ivf" and big["cells"] == 4000 and big["nprobe"] == ann.IVF_NPROBE
    assert ann.choose_index(100, "ivf")["cells"] == 2
    assert ann.choose_index(10, "hnsw")["kind"] == "hnsw"
    with pytest.raises(ValueError, match="INDEX must be one of"):
        ann.choose_index(10, "ivfpq")


def test_hnsw_ranking_is_certified():
    rows = clustered_rows(n=800)
    result, table = certified_ranking(rows, 2, top_n=10, kind="hnsw")
    exact = brute_force(rows, 2)
    assert table.head(10)["file"].tolist() == exact.head(10)["file"].tolist()


def test_rank_at_scale_rejects_nan():
    rows = clustered_rows(n=50)
    rows[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ann.rank_at_scale(rows)


def test_rank_at_scale_handles_all_copies_and_certifies_nothing():
    rows = np.ones((4, 8), dtype=np.float32)
    result, _, _ = ann.rank_at_scale(rows, top_n=2)
    assert (result.neighbours["nearest"] == -1).all()
    assert pd.isna(result.neighbours["distance"]).all()
    assert not result.certified.holds  # no scores, so no certificate
    assert result.certified.summary().startswith("NOT certified")


@pytest.mark.parametrize("k_neighbours", [0, -1])
def test_no_neighbours_means_no_scores_and_no_certificate(k_neighbours):
    rows = clustered_rows(n=200)
    with pytest.raises(ValueError, match="k must be 1 or more"):
        ann.knn_scores(ann.BruteForce(rows), rows, np.arange(len(rows)), k_neighbours)
    nearest, scores = np.full(len(rows), -1), np.full(len(rows), np.nan)
    with pytest.raises(ValueError, match="no score to certify"):
        ann.certify_top(rows, nearest, scores, top_n=5, k_neighbours=k_neighbours)
    with pytest.raises(ValueError, match="no score to certify"):
        ann.certify_top(rows, nearest, scores, top_n=k_neighbours, k_neighbours=1)


def test_a_certificate_over_nan_scores_does_not_hold():
    record = dict(nearest=np.full(4, -1), exact_rows=np.arange(4), rounds=1, seconds=0, top_n=2)
    nan = np.full(4, np.nan)
    assert not ann.Certified(
        **record, scores=nan, candidates_checked=4, bound=-np.inf, top_n_exact=-np.inf
    ).holds
    assert not ann.Certified(
        **record, scores=nan, candidates_checked=4, bound=-np.inf, top_n_exact=np.nan
    ).holds
    some_nan = np.array([3.0, np.nan, 1.0, 1.0])
    assert not ann.Certified(
        **record, scores=some_nan, candidates_checked=4, bound=-np.inf, top_n_exact=1.0
    ).holds


def test_a_top_n_beyond_the_rows_certifies_only_the_ranks_there_are():
    rows = clustered_rows(n=60)
    distinct = rows[search.group_copies(rows).first_rows]
    nearest, scores = ann.knn_scores(
        ann.BruteForce(distinct), distinct, np.arange(len(distinct)), 1
    )
    certified = ann.certify_top(distinct, nearest, scores, top_n=1000)
    assert certified.holds and certified.top_n == len(distinct)
    assert f"rank {len(distinct)} " in certified.summary() and "1000" not in certified.summary()
    figure = plots.plot_certificate(scores, certified)
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert any(f"rank {len(distinct)} =" in label for label in labels)
    assert not any("1000" in label for label in labels)
    plt.close(figure)


def test_a_certificate_whose_bound_reaches_the_top_does_not_hold():
    scores = np.array([3.0, 2.0, 1.0, 1.0])
    record = dict(
        nearest=np.zeros(4), scores=scores, exact_rows=np.arange(2), rounds=1, seconds=0, top_n=2
    )
    assert not ann.Certified(**record, candidates_checked=2, bound=2.0, top_n_exact=2.0).holds
    assert ann.Certified(**record, candidates_checked=2, bound=1.0, top_n_exact=2.0).holds
    assert ann.Certified(**record, candidates_checked=4, bound=-np.inf, top_n_exact=1.0).holds


@pytest.mark.parametrize("queries", ["all", "subset"])
def test_cell_by_cell_search_finds_what_query_by_query_search_finds(queries):
    rows = clustered_rows(n=4000)
    distinct = rows[search.group_copies(rows).first_rows]
    index = ann.build_index(distinct, ann.choose_index(len(distinct), "ivf", nprobe=2))
    assert len(distinct) >= ann.BIG_BATCH_QUERIES_PER_CELL * index.nlist  # takes that path
    chosen = np.arange(len(distinct))
    if queries == "subset":
        chosen = np.random.default_rng(3).choice(len(distinct), 2000, replace=False)
        assert len(chosen) >= ann.BIG_BATCH_QUERIES_PER_CELL * index.nlist
    distances, labels = ann.search_rows(index, distinct, chosen, 3)
    expected_distances, expected_labels = index.search(distinct[chosen], 3)
    # the same neighbours; distances by a matrix product agree to float precision
    assert (labels[:, 1:] == expected_labels[:, 1:]).mean() > 0.999
    np.testing.assert_allclose(distances[:, 1:], expected_distances[:, 1:], rtol=1e-4, atol=1e-6)
    nearest, scores = ann.knn_scores(index, distinct, chosen, 2)
    assert (nearest == expected_labels[:, 1]).mean() > 0.999
    np.testing.assert_allclose(scores, expected_distances[:, 1:].mean(axis=1), rtol=1e-4)


def test_certified_mutual_pairs_share_one_distance():
    result, _, _ = ann.rank_at_scale(rows_with_mutual_pairs(), kind="flat", top_n=300)
    assert_mutual_pairs_tie(result.certified.nearest, result.certified.scores)
