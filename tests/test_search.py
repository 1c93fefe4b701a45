"""nearest_distinct_neighbours on crafted vectors, and against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from snowflake_tools import search


def brute_force(features: np.ndarray) -> pd.DataFrame:
    """Reference: the definition, written out with numpy in float64."""
    x = features.astype(np.float64)
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    identical = (x[:, None, :] == x[None, :, :]).all(axis=2)
    masked = np.where(identical, np.inf, squared)
    nearest = masked.argmin(axis=1)
    distance = masked.min(axis=1)
    none = ~np.isfinite(distance)
    return pd.DataFrame(
        {
            "nearest": np.where(none, -1, nearest),
            "distance": np.where(none, np.nan, distance),
            "duplicates": identical.sum(axis=1) - 1,
        }
    )


def test_columns_types_and_order():
    features = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    result = search.nearest_distinct_neighbours(features)
    assert list(result.columns) == ["nearest", "distance", "duplicates"]
    assert result["nearest"].dtype == np.int64
    assert result["duplicates"].dtype == np.int64
    assert result["nearest"].tolist() == [2, 0, 0]
    assert result["distance"].tolist() == pytest.approx([1.0, 9.0, 1.0])
    assert result["duplicates"].tolist() == [0, 0, 0]


def test_pair_of_duplicates_is_skipped_and_counted():
    features = np.array([[0.0], [0.0], [5.0], [7.0]], dtype=np.float32)
    result = search.nearest_distinct_neighbours(features)
    assert result["nearest"].tolist() == [2, 2, 3, 2]
    assert result["distance"].tolist() == pytest.approx([25.0, 25.0, 4.0, 4.0])
    assert result["duplicates"].tolist() == [1, 1, 0, 0]


def test_group_of_four_duplicates_never_chosen():
    copies = np.tile([[1.0, 1.0, 1.0]], (4, 1))
    others = np.array([[1.0, 1.0, 3.0], [9.0, 9.0, 9.0]])
    features = np.vstack([others[:1], copies, others[1:]]).astype(np.float32)
    result = search.nearest_distinct_neighbours(features)
    # Rows 1-4 are copies: each one's nearest distinct row is row 0, at distance 4.
    assert result.loc[1:4, "nearest"].tolist() == [0, 0, 0, 0]
    assert result.loc[1:4, "distance"].tolist() == pytest.approx([4.0] * 4)
    assert result.loc[1:4, "duplicates"].tolist() == [3, 3, 3, 3]
    # Row 0's nearest is the copy group, reported as its first row.
    assert result.loc[0, "nearest"] == 1
    assert result.loc[0, "duplicates"] == 0
    for row, nearest in enumerate(result["nearest"]):
        assert not np.array_equal(features[row], features[nearest])


def test_duplicates_are_found_by_value_not_by_distance():
    """Large, nearly equal vectors give FAISS float error; copies must still be recognised."""
    rng = np.random.default_rng(1)
    base = rng.uniform(1e3, 2e3, size=(1, 4096)).astype(np.float32)
    near = base.copy()
    near[0, 7] += 0.5  # a distinct vector at a tiny distance
    features = np.vstack([base, base, near, base]).astype(np.float32)
    result = search.nearest_distinct_neighbours(features)
    assert result["nearest"].tolist() == [2, 2, 0, 2]
    assert result["duplicates"].tolist() == [2, 2, 0, 2]


def test_negative_zero_counts_as_duplicate():
    features = np.array([[0.0, 1.0], [-0.0, 1.0], [2.0, 1.0]], dtype=np.float32)
    result = search.nearest_distinct_neighbours(features)
    assert result["duplicates"].tolist() == [1, 1, 0]
    assert result["nearest"].tolist() == [2, 2, 0]


def test_all_identical_rows_have_no_neighbour():
    features = np.ones((5, 3), dtype=np.float32)
    result = search.nearest_distinct_neighbours(features)
    assert (result["nearest"] == -1).all()
    assert result["distance"].isna().all()
    assert (result["duplicates"] == 4).all()


def test_row_without_distinct_neighbour_among_others():
    features = np.array([[1.0], [1.0], [2.0]], dtype=np.float32)
    result = search.nearest_distinct_neighbours(features)
    assert result["nearest"].tolist() == [2, 2, 0]


def test_ties_resolve_to_lowest_row_even_beyond_first_candidates():
    # Row 0 sits at distance 1 from eight others; the lowest of them (row 1) must win.
    centre = np.zeros((1, 8))
    ring = np.eye(8)
    features = np.vstack([centre, ring[::-1], ring[:2] * 5]).astype(np.float32)
    result = search.nearest_distinct_neighbours(features)
    assert result.loc[0, "nearest"] == 1
    assert result.loc[0, "distance"] == pytest.approx(1.0)


def test_result_does_not_depend_on_row_order():
    rng = np.random.default_rng(7)
    features = rng.random((40, 16)).astype(np.float32)
    features[5] = features[30]
    order = rng.permutation(len(features))
    direct = search.nearest_distinct_neighbours(features)
    shuffled = search.nearest_distinct_neighbours(features[order])
    np.testing.assert_allclose(shuffled["distance"], direct["distance"].to_numpy()[order], 1e-5)
    assert shuffled["duplicates"].tolist() == direct["duplicates"].to_numpy()[order].tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_features_with_planted_duplicates(seed):
    rng = np.random.default_rng(seed)
    features = np.maximum(rng.normal(size=(120, 64)), 0).astype(np.float32)  # ReLU-like
    features[10] = features[3]
    features[50] = features[51] = features[52] = features[99]
    expected = brute_force(features)
    result = search.nearest_distinct_neighbours(features)
    assert result["duplicates"].tolist() == expected["duplicates"].tolist()
    np.testing.assert_allclose(result["distance"], expected["distance"], rtol=1e-4, atol=1e-5)
    # Where the nearest distance is unique, the chosen row is the reference's row.
    assert (result["nearest"] == expected["nearest"]).mean() > 0.95


def test_rejects_bad_shapes_and_values():
    with pytest.raises(ValueError, match="2-D"):
        search.nearest_distinct_neighbours(np.zeros(5))
    bad = np.zeros((3, 2), dtype=np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        search.nearest_distinct_neighbours(bad)


def test_exact_duplicate_groups_numbers_by_first_row():
    features = np.array([[2.0], [1.0], [2.0], [3.0], [1.0]], dtype=np.float32)
    assert search.exact_duplicate_groups(features).tolist() == [0, 1, 0, 2, 1]


def test_rank_uniqueness_orders_by_distance_with_missing_last():
    neighbours = pd.DataFrame(
        {"nearest": [1, 0, 1, -1], "distance": [2.0, 2.0, 9.0, np.nan], "duplicates": [0, 0, 0, 0]}
    )
    ranking = search.rank_uniqueness(neighbours, ["b.png", "a.png", "c.png", "d.png"])
    assert list(ranking.columns) == ["rank", "file", "nearest_file", "distance", "duplicates"]
    assert ranking["file"].tolist() == ["c.png", "a.png", "b.png", "d.png"]
    assert ranking["rank"].tolist() == [1, 2, 3, 4]
    assert ranking["nearest_file"].tolist() == ["a.png", "b.png", "a.png", ""]


def test_rank_uniqueness_checks_lengths():
    neighbours = pd.DataFrame({"nearest": [1, 0], "distance": [1.0, 1.0], "duplicates": [0, 0]})
    with pytest.raises(ValueError, match="3 file names for 2 rows"):
        search.rank_uniqueness(neighbours, ["a", "b", "c"])


def test_find_near_duplicates_lists_each_close_pair_once():
    ranking = pd.DataFrame(
        {
            "file": ["a", "b", "c", "d", "e"],
            "nearest_file": ["b", "a", "d", "c", "a"],
            "distance": [0.01, 0.01, 10.0, 10.0, 12.0],
        }
    )
    close = search.find_near_duplicates(ranking, ratio=0.05)
    assert close[["file", "nearest_file"]].values.tolist() == [["a", "b"]]
    assert close.loc[0, "ratio_to_median"] == pytest.approx(0.001)


def test_distinct_rows_gives_groups_and_their_first_rows():
    features = np.array([[2.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    groups, first_rows = search.distinct_rows(features)
    assert groups.tolist() == [0, 1, 0, 2]
    assert first_rows.tolist() == [0, 1, 3]


def test_check_features_returns_contiguous_float32():
    checked = search.check_features(np.arange(6, dtype=np.float64).reshape(3, 2)[:, ::-1])
    assert checked.dtype == np.float32 and checked.flags.c_contiguous
