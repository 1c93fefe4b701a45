"""Fidelity of bfloat16 extraction: the ranking it gives against float32's (not timed).

VGG16 runs with random weights (seeded, the same in both precisions): the ImageNet weights
cannot be downloaded everywhere these tests run. Two sets, 40 images each plus an exact copy
and a re-encoded copy, at the notebooks' IMAGE_SIZE of 224: the demo crystals, and photo-like
images (1/f noise with a subject, JPEG). ``make bench`` prints the same numbers as a table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fidelity  # noqa: E402

from snowflake_tools import features  # noqa: E402

pytestmark = pytest.mark.slow

IMAGES, IMAGE_SIZE = 40, 224


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory):
    paths = fidelity.demo_set(tmp_path_factory.mktemp("demo"), IMAGES)
    return fidelity.compare_precisions(paths, IMAGE_SIZE)


@pytest.fixture(scope="module")
def photo_result(tmp_path_factory):
    paths = fidelity.photo_like_set(tmp_path_factory.mktemp("photos"), IMAGES, seed=0)
    return fidelity.compare_precisions(paths, IMAGE_SIZE)


def check_same_ranking_up_to_near_ties(result: dict) -> None:
    """What both sets must keep in bfloat16; the top N may differ only inside a near-tie."""
    assert result["images"] == IMAGES + 2
    assert result["copies_found"] == 2 and result["near_duplicates_found"] >= 1  # planted ones
    assert result["same_copies"] and result["same_near_duplicates"]
    assert result["spearman"] >= 0.99
    assert 0 < result["median_relative_difference"] < 0.02  # bfloat16 did run, and stayed close
    assert result["largest_distance_change"] < 0.01
    # A swap in the top N is allowed only between flakes that float32 itself puts closer
    # together than bfloat16 moves any distance.
    assert result["top_n_identical"] or (
        result["smallest_top_gap"] < result["largest_distance_change"]
    )


def test_demo_set_ranks_the_same_in_bfloat16(demo_result):
    check_same_ranking_up_to_near_ties(demo_result)
    assert demo_result["top_n_identical"]


def test_photo_like_images_rank_the_same_in_bfloat16(photo_result):
    check_same_ranking_up_to_near_ties(photo_result)


@pytest.mark.parametrize("name", ["demo_result", "photo_result"])
def test_auto_gives_the_float32_top_n(name, request):
    """PRECISION = "auto", close-call check included, always ends with float32's top N."""
    result = request.getfixturevalue(name)
    assert result["auto_top_n_identical"]
    # the check falls back exactly when bfloat16 left close calls (or auto chose float32)
    if features.resolve_precision(features.AUTO) == features.BFLOAT16:
        expected = features.FLOAT32 if result["close_calls"] else features.BFLOAT16
        assert result["auto_uses"] == expected
    else:
        assert result["auto_uses"] == features.FLOAT32


def test_the_close_call_check_catches_every_swap(demo_result, photo_result):
    """A top N that bfloat16 reorders always shows up as a close call."""
    for result in (demo_result, photo_result):
        assert result["top_n_identical"] or result["close_calls"]
    # on these sets: the demo crystals are far apart, the photo-like set has a near tie
    assert not demo_result["close_calls"] and photo_result["close_calls"]
