"""The close calls that send a bfloat16 ranking back to float32 (snowflake_tools.fidelity)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from snowflake_tools import features, fidelity, search


def ranking_of(distances: list[float]) -> pd.DataFrame:
    """A ranking with these nearest-neighbour distances, flake i's neighbour being flake i+1."""
    files = [f"flake-{number:02d}.png" for number in range(len(distances))]
    neighbours = pd.DataFrame(
        {
            "nearest": [(row + 1) % len(distances) for row in range(len(distances))],
            "distance": distances,
            "duplicates": 0,
        }
    )
    return search.rank_uniqueness(neighbours, files)


# Median 10 in every case below: margin 0.02 makes gaps under 0.2 close.
SPREAD = [30.0, 25.0, 20.0, 15.0, 12.0, 10.0, 10.0, 10.0, 9.0, 8.0, 7.0]


def test_well_separated_top_has_no_close_calls():
    assert fidelity.close_calls(ranking_of(SPREAD), top_n=3).empty


def test_a_small_gap_inside_the_top_is_a_close_call():
    distances = [30.0, 25.0, 24.9, *SPREAD[3:]]
    calls = fidelity.close_calls(ranking_of(distances), top_n=3)
    assert calls["what"].tolist() == ["order"]
    assert calls[["file", "other"]].iloc[0].tolist() == ["flake-01.png", "flake-02.png"]
    assert calls["gap_to_median"].iloc[0] == pytest.approx(0.01)


def test_the_first_flake_below_the_top_counts_but_not_further_down():
    # rank 3 against rank 4 decides who is in the top 3; ranks 5 and 6 decide nothing
    in_top = fidelity.close_calls(ranking_of([30.0, 25.0, 20.0, 19.95, *SPREAD[4:]]), top_n=3)
    below = fidelity.close_calls(ranking_of([30.0, 25.0, 20.0, 15.0, 12.0, 11.95, *SPREAD[6:]]), 3)
    assert len(in_top) == 1 and below.empty


def test_exact_ties_are_not_close_calls():
    # a mutual pair shares one distance, in either precision, and is ordered by file name
    assert fidelity.close_calls(ranking_of([30.0, 30.0, 20.0, *SPREAD[3:]]), top_n=3).empty


def test_margin_is_a_fraction_of_the_median():
    distances = [30.0, 25.0, 24.0, *SPREAD[3:]]  # gap 1.0 = 10 % of the median
    assert fidelity.close_calls(ranking_of(distances), 3).empty
    assert len(fidelity.close_calls(ranking_of(distances), 3, margin=0.2)) == 1


def test_a_distance_at_the_near_duplicate_threshold_is_a_close_call():
    distances = [*SPREAD[:-1], 0.51]  # threshold 0.05 x 10 = 0.5
    calls = fidelity.close_calls(ranking_of(distances), 3, near_duplicate_ratio=0.05)
    assert calls["what"].tolist() == ["near-duplicate"]
    assert calls["distance"].iloc[0] == pytest.approx(0.51)
    far_below = [*SPREAD[:-1], 0.01]
    assert fidelity.close_calls(ranking_of(far_below), 3, near_duplicate_ratio=0.05).empty
    assert fidelity.close_calls(ranking_of(distances), 3, near_duplicate_ratio=None).empty


def test_rankings_without_distances_have_no_close_calls():
    everything_copied = ranking_of([np.nan, np.nan, np.nan])
    calls = fidelity.close_calls(everything_copied, 3, near_duplicate_ratio=0.05)
    assert calls.empty and list(calls.columns) == fidelity.CLOSE_CALL_COLUMNS


def test_top_n_larger_than_the_set():
    assert len(fidelity.close_calls(ranking_of([3.0, 2.99, 1.0]), top_n=10)) == 1


@pytest.fixture
def one_call():
    return fidelity.close_calls(ranking_of([30.0, 25.0, 24.9, *SPREAD[3:]]), top_n=3)


def test_only_auto_falls_back_and_only_from_bfloat16(one_call, capsys):
    auto, bf16, f32 = features.AUTO, features.BFLOAT16, features.FLOAT32
    assert fidelity.float32_needed(auto, bf16, one_call)
    assert "again in float32" in capsys.readouterr().out
    assert not fidelity.float32_needed(bf16, bf16, one_call)  # asked for: kept, with a warning
    assert "Warning" in capsys.readouterr().out
    assert not fidelity.float32_needed(auto, f32, one_call)  # already float32
    assert not fidelity.float32_needed(auto, bf16, one_call.iloc[:0])  # nothing close
    assert "stands in bfloat16" in capsys.readouterr().out.splitlines()[-1]
