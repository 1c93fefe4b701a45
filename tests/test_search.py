"""nearest_distinct_neighbours and knn_uniqueness on crafted vectors and against brute force."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import pytest
from helpers import assert_mutual_pairs_tie, rows_with_mutual_pairs

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


def test_a_pair_of_copies_and_one_other_row_are_each_others_neighbours():
    features = np.array([[1.0], [1.0], [2.0]], dtype=np.float32)
    result = search.nearest_distinct_neighbours(features)
    assert result["nearest"].tolist() == [2, 2, 0]
    assert result["duplicates"].tolist() == [1, 1, 0]


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
    # Where the reference's nearest distance is clearly unique, both choose the same row.
    squared = ((features[:, None, :].astype(np.float64) - features[None]) ** 2).sum(axis=2)
    squared[squared == 0] = np.inf  # itself and its copies
    runner_up = np.sort(squared, axis=1)[:, 1]
    clear = runner_up > expected["distance"].to_numpy() * (1 + 1e-3)
    assert clear.mean() > 0.9
    assert (result["nearest"][clear] == expected["nearest"][clear]).all()


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


def test_group_copies_gives_groups_first_rows_and_each_distinct_vector_once():
    features = np.array([[2.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    copies = search.group_copies(features)
    assert copies.groups.tolist() == [0, 1, 0, 2]
    assert copies.first_rows.tolist() == [0, 1, 3]
    assert copies.extra_rows.tolist() == [2]
    index = search.index_of_distinct(features, copies)
    assert index.reconstruct_n(0, index.ntotal).tolist() == [[2.0], [1.0], [3.0]]
    no_copies = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert search.group_copies(no_copies).extra_rows.tolist() == []


def test_distinct_rows_checks_groups_and_keeps_each_vector_once():
    features, copies, rows = search.distinct_rows(np.array([[2.0], [1.0], [2.0], [3.0]]))
    assert features.dtype == np.float32 and copies.groups.tolist() == [0, 1, 0, 2]
    assert rows.tolist() == [[2.0], [1.0], [3.0]]
    with pytest.raises(ValueError, match="NaN or infinity"):
        search.distinct_rows(np.array([[1.0], [np.nan]]))


def test_neighbours_per_row_spreads_each_groups_answer_to_its_copies():
    copies = search.group_copies(np.array([[2.0], [1.0], [2.0], [3.0]], dtype=np.float32))
    table = search.neighbours_per_row(copies, np.array([1, 0, -1]), np.array([1.0, 1.0, np.nan]))
    assert table["nearest"].tolist() == [1, 0, 1, -1]
    assert table["duplicates"].tolist() == [1, 0, 1, 0]
    assert table["distance"].iloc[:3].tolist() == [1.0, 1.0, 1.0]


def test_copies_are_confirmed_on_the_whole_row_not_on_the_sampled_values():
    rng = np.random.default_rng(5)
    features = rng.random((12, 5000)).astype(np.float32)
    features[3] = features[7] = features[8] = features[0]  # a group of four
    features[9] = features[10] = features[5]  # and a group of three
    features[11] = features[1]
    features[11, 1] += 1.0  # agrees with row 1 on the sampled values, not on the whole row
    features[2, :] = -0.0
    features[4, :] = 0.0
    groups = search.exact_duplicate_groups(features)
    assert groups.tolist() == [0, 1, 2, 0, 2, 3, 4, 0, 0, 3, 3, 5]


@pytest.mark.parametrize("size", [2, 3, 50])
def test_a_folder_of_nothing_but_copies_is_one_group_without_neighbours(size):
    features = np.tile(np.arange(1000, dtype=np.float32), (size, 1))
    assert search.exact_duplicate_groups(features).tolist() == [0] * size
    result = search.nearest_distinct_neighbours(features)
    assert (result["nearest"] == -1).all() and result["distance"].isna().all()


def test_the_notebook_steps_give_the_package_result():
    rng = np.random.default_rng(2)
    features = rng.random((30, 40)).astype(np.float32)
    features[4] = features[20]
    copies = search.group_copies(features)
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(features)
    index.remove_ids(copies.extra_rows)
    distances, labels = index.search(features, search.CANDIDATES)
    first = copies.first_rows
    nearest, distance = search.closest_others(index, distances[first], labels[first])
    steps = search.neighbours_per_row(copies, nearest, distance)
    pd.testing.assert_frame_equal(steps, search.nearest_distinct_neighbours(features))


def test_check_features_returns_contiguous_float32_copying_only_when_needed():
    checked = search.check_features(np.arange(6, dtype=np.float64).reshape(3, 2)[:, ::-1])
    assert checked.dtype == np.float32 and checked.flags.c_contiguous
    assert checked.tolist() == [[1, 0], [3, 2], [5, 4]]
    assert search.check_features(checked) is checked


def test_a_float64_value_beyond_float32_is_caught_after_conversion():
    features = np.zeros((3, 2))
    features[2, 1] = 1e39  # finite in float64, infinity in float32
    with pytest.raises(ValueError, match=r"rows \[2\] contain NaN or infinity"):
        search.nearest_distinct_neighbours(features)


def test_squared_distances_that_overflow_float32_are_a_clear_error():
    features = np.zeros((3, 4), dtype=np.float32)
    features[1] = 6e18  # fits float32; |row|^2 = 1.4e38 does too, but |a - b|^2 may not
    with pytest.raises(ValueError, match=r"rows \[1\].*overflow float32.*scale the features"):
        search.nearest_distinct_neighbours(features)


# --- k-NN uniqueness ---------------------------------------------------------------------------


def test_knn_score_on_a_line_is_the_mean_of_the_k_nearest_squared_distances():
    points = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)
    scores = search.knn_uniqueness(points, 2)
    np.testing.assert_allclose(scores["distance"], [(1 + 9) / 2, (1 + 4) / 2, (4 + 9) / 2, 26])
    assert scores["nearest"].tolist() == [1, 0, 1, 2]


def test_k_equal_one_is_the_nearest_distinct_neighbour():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(30, 7)).astype(np.float32)
    rows[10] = rows[4]  # an exact duplicate pair
    expected = search.nearest_distinct_neighbours(rows)
    pd.testing.assert_frame_equal(search.knn_uniqueness(rows, 1), expected)


def test_two_near_copies_of_an_odd_flake_hide_each_other_under_1nn_but_not_knn():
    rng = np.random.default_rng(0)
    ordinary = rng.normal(0, 1, size=(20, 2))  # a crowd of ordinary flakes
    odd = np.array([[12.0, 12.0], [12.05, 12.0]])  # one odd flake and its near-copy
    rows = np.vstack([ordinary, odd]).astype(np.float32)
    files = [f"ordinary{i:02d}" for i in range(20)] + ["odd", "odd_copy"]

    one_nn = search.rank_uniqueness(search.nearest_distinct_neighbours(rows), files)
    k_nn = search.rank_uniqueness(search.knn_uniqueness(rows, 3), files)
    # Under 1-NN each copy's nearest neighbour is the other, 0.0025 away: they rank last.
    assert set(one_nn["file"].tail(2)) == {"odd", "odd_copy"}
    assert one_nn.set_index("file").loc["odd", "distance"] == pytest.approx(0.0025, rel=1e-3)
    # Under 3-NN two of the three neighbours are the crowd, far away: they rank first.
    assert set(k_nn["file"].head(2)) == {"odd", "odd_copy"}
    assert k_nn.set_index("file").loc["odd", "distance"] > 100


def test_exact_duplicates_are_neither_neighbours_nor_crowd_out_real_ones():
    points = np.array([[0.0], [0.0], [0.0], [2.0], [5.0]], dtype=np.float32)
    scores = search.knn_uniqueness(points, 2)
    assert scores["duplicates"].tolist() == [2, 2, 2, 0, 0]
    np.testing.assert_allclose(scores["distance"][:3], (4 + 25) / 2)
    np.testing.assert_allclose(scores["distance"][3:], [(4 + 9) / 2, (9 + 25) / 2])
    assert scores["nearest"].tolist() == [3, 3, 3, 0, 3]


def test_fewer_distinct_rows_than_k_average_over_what_there_is():
    scores = search.knn_uniqueness(np.array([[0.0], [3.0]], dtype=np.float32), 5)
    np.testing.assert_allclose(scores["distance"], [9, 9])
    alone = search.knn_uniqueness(np.ones((3, 2), dtype=np.float32), 2)
    assert alone["nearest"].tolist() == [-1, -1, -1] and alone["distance"].isna().all()


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_k_must_be_a_positive_whole_number(k):
    with pytest.raises(ValueError, match="K_NEIGHBOURS"):
        search.knn_uniqueness(np.zeros((3, 2), dtype=np.float32), k)


def test_distinct_neighbours_skip_copies_and_match_brute_force():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(12, 8)).astype(np.float32)
    features[[5, 6]] = features[0]  # copies of the query
    features[9] = features[1]  # a copy of a neighbour
    found = search.distinct_neighbours(features, [0, 3], k=4)
    mine = found[found["row"] == 0]
    assert mine["order"].tolist() == [1, 2, 3, 4]
    assert not set(mine["neighbour"]) & {0, 5, 6, 9}
    distances = ((features - features[0]) ** 2).sum(axis=1)
    expected = [row for row in np.argsort(distances) if row not in (0, 5, 6, 9)][:4]
    assert mine["neighbour"].tolist() == expected
    np.testing.assert_allclose(mine["distance"], distances[expected], rtol=1e-4)
    assert len(found[found["row"] == 3]) == 4


def test_a_mutual_pair_shares_its_smaller_distance():
    nearest = np.array([1, 0, 0, -1, 2])
    distance = np.array([2.0000002, 2.0, 3.0, np.nan, 3.0])
    shared = search.share_mutual_distances(nearest, distance)
    # 0 and 1 are each other's nearest; 2 points at 0 but 0 points at 1, so 2 keeps its own.
    np.testing.assert_array_equal(shared, [2.0, 2.0, 3.0, np.nan, 3.0])
    assert distance[0] == 2.0000002  # the input is left as it was


def test_mutual_pairs_tie_exactly_in_the_ranking():
    # FAISS may round a pair's two computations of one distance differently, which would
    # order the pair by rounding, not by file name.
    neighbours = search.nearest_distinct_neighbours(rows_with_mutual_pairs())
    assert_mutual_pairs_tie(neighbours["nearest"].to_numpy(), neighbours["distance"].to_numpy())
