"""Variants of photos, batched description, self-retrieval and agreement tables."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from snowflake_tools import images, pooling, robustness, search  # noqa: E402

BACKGROUND = (20, 30, 60)


def flake_photo(size=32, seed=0):
    """Dark background, an off-centre bright blob and a little noise: uint8 (size, size, 3)."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((size, size, 3), dtype=np.float64)
    pixels[:] = BACKGROUND
    pixels[size // 4 : size // 2, size // 5 : size // 2 + 2] = (230, 240, 250)
    pixels[size // 2 - 3 : size // 2 + 3, size // 2 - 3 : size // 2 + 3] = (200, 210, 255)
    pixels += rng.normal(0, 3, pixels.shape) * (pixels > 100)
    return np.clip(pixels, 0, 255).astype(np.uint8)


# --- Variants ----------------------------------------------------------------------------------


def test_border_colour_is_the_border_median_not_the_bright_middle():
    assert images.border_colour(flake_photo()).tolist() == list(BACKGROUND)


def test_quarter_and_half_turns_only_move_pixels():
    photo = flake_photo()
    turned = robustness.rotate_pixels(photo, 90)
    assert turned.dtype == np.uint8 and turned.shape == photo.shape
    np.testing.assert_array_equal(turned, np.rot90(photo))  # counter-clockwise
    half = robustness.rotate_pixels(photo, 180)
    np.testing.assert_array_equal(half, photo[::-1, ::-1])
    np.testing.assert_array_equal(robustness.rotate_pixels(half, 180), photo)


def test_an_odd_turn_fills_the_corners_with_the_background_and_moves_the_blob():
    photo = flake_photo(size=40)
    turned = robustness.rotate_pixels(photo.astype(np.float32), 45)  # float 0-255 works too
    assert turned.shape == photo.shape
    for corner in (turned[0, 0], turned[0, -1], turned[-1, 0], turned[-1, -1]):
        assert corner.tolist() == list(BACKGROUND)
    bright_before = np.argwhere(photo[..., 0] > 150).mean(axis=0)
    bright_after = np.argwhere(turned[..., 0] > 150).mean(axis=0)
    centre = np.array([19.5, 19.5])
    # Same distance from the centre, in a direction turned by 45 degrees.
    before, after = bright_before - centre, bright_after - centre
    assert np.linalg.norm(after) == pytest.approx(np.linalg.norm(before), rel=0.15)
    angle = np.degrees(np.arctan2(-after[0], after[1]) - np.arctan2(-before[0], before[1]))
    assert (angle % 360) == pytest.approx(45, abs=6)


def test_mirror_flips_left_to_right():
    photo = flake_photo()
    np.testing.assert_array_equal(robustness.mirror_pixels(photo), photo[:, ::-1])
    np.testing.assert_array_equal(robustness.mirror_pixels(robustness.mirror_pixels(photo)), photo)


def test_jpeg_round_trip_changes_pixels_a_little_more_at_low_quality():
    photo = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    high = robustness.reencode_jpeg(photo, 95)
    low = robustness.reencode_jpeg(photo, 10)
    assert high.shape == photo.shape and high.dtype == np.uint8
    error_high = np.abs(high.astype(int) - photo).mean()
    error_low = np.abs(low.astype(int) - photo).mean()
    assert 0 < error_high < error_low


@pytest.mark.parametrize("quality", [0, 101, 7.5, "high", True])
def test_jpeg_quality_out_of_range_is_refused(quality):
    with pytest.raises(ValueError, match="quality"):
        robustness.reencode_jpeg(flake_photo(), quality)


def test_shape_errors_say_what_was_expected():
    with pytest.raises(ValueError, match="height, width, 3"):
        robustness.rotate_pixels(np.zeros((8, 8)), 30)


def test_variant_makers_names_and_makes_each_variant():
    makers = robustness.variant_makers((30, 90.0), mirror=True, jpeg_quality=75)
    assert list(makers) == ["rotated 30°", "rotated 90°", "mirrored", "JPEG q=75"]
    photo = flake_photo()
    np.testing.assert_array_equal(makers["rotated 90°"](photo), np.rot90(photo))
    np.testing.assert_array_equal(makers["mirrored"](photo), photo[:, ::-1])
    assert list(robustness.variant_makers((45,), mirror=False, jpeg_quality=None)) == [
        "rotated 45°"
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(angles=(0,)), "whole turn"),
        (dict(angles=(720,)), "whole turn"),
        (dict(angles=(30, 30)), "twice"),
        (dict(angles=("30",)), "numbers"),
        (dict(angles=(), mirror=False, jpeg_quality=None), "No variants"),
        (dict(jpeg_quality=0), "quality"),
    ],
)
def test_variant_makers_refuse_variants_that_test_nothing(arguments, message):
    with pytest.raises(ValueError, match=message):
        robustness.variant_makers(**arguments)


# --- Describing variants -----------------------------------------------------------------------


def unit_test_extractor(size=16):
    """A tiny convolutional model with fixed random weights, standing in for cut VGG16."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    maps = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.AveragePooling2D(2)(maps))


METHODS = {
    "flat": lambda maps: maps[0].reshape(len(maps[0]), -1),
    "pooled": lambda maps: np.mean([m.mean(axis=(1, 2)) for m in maps], axis=0),
}


@pytest.fixture(scope="module")
def described():
    pixels = np.stack([flake_photo(16, seed) for seed in range(5)])
    pixels[3] = np.roll(pixels[3], 4, axis=1)  # make the flakes differ in more than noise
    makers = robustness.variant_makers((90, 30), mirror=True, jpeg_quality=None)
    extractor = unit_test_extractor()
    result = robustness.describe_variants(
        extractor, pixels, makers, METHODS, (0, 90, 180, 270), batch_size=2, progress=False
    )
    return pixels, makers, extractor, result


def test_describe_variants_lays_rows_out_variant_by_variant(described):
    pixels, makers, _, result = described
    kinds = ["original", "rotated 90°", "rotated 30°", "mirrored"]
    assert result.versions["version"].tolist() == [kind for kind in kinds for _ in range(5)]
    assert result.versions["flake"].tolist() == list(range(5)) * 4
    assert result.features["flat"].shape == (20, 8 * 8 * 6)
    assert result.features["pooled"].shape == (20, 6)
    assert result.forward_passes == 5 * 4 * 4


def test_described_originals_are_run_model_on_the_pixels(described):
    pixels, _, extractor, result = described
    expected = robustness.feature_tools.run_model(extractor, pixels)
    np.testing.assert_allclose(result.features["flat"][:5], expected, rtol=1e-5, atol=1e-5)


def test_pooling_over_quarter_turns_makes_a_quarter_turned_variant_identical(described):
    _, _, _, result = described
    pooled, flat = result.features["pooled"], result.features["flat"]
    turned = slice(5, 10)  # the "rotated 90°" variants
    np.testing.assert_allclose(pooled[turned], pooled[:5], rtol=1e-5, atol=1e-6)
    assert not np.allclose(flat[turned], flat[:5], atol=1e-3)  # the flat map remembers the turn


def test_batch_size_does_not_change_the_features(described):
    pixels, makers, extractor, result = described
    again = robustness.describe_variants(
        extractor, pixels, makers, METHODS, (0, 90, 180, 270), batch_size=5, progress=False
    )
    for name in METHODS:
        np.testing.assert_allclose(again.features[name], result.features[name], atol=1e-5)


def test_a_sample_gets_variants_and_every_flake_its_original(described):
    pixels, makers, extractor, result = described
    sampled = robustness.describe_variants(
        extractor, pixels, makers, METHODS, (0, 90, 180, 270), batch_size=2, progress=False,
        sample=[3, 1],
    )  # fmt: skip
    versions = sampled.versions
    assert versions["flake"].tolist() == [0, 1, 2, 3, 4] + [3, 1] * 3
    assert versions["version"].tolist() == ["original"] * 5 + [k for k in makers for _ in "ab"]
    assert sampled.forward_passes == (5 + 2 * 3) * 4
    full_rows = [
        k * 5 + flake for k in range(4) for flake in ([0, 1, 2, 3, 4] if k == 0 else [3, 1])
    ]
    for name in METHODS:
        np.testing.assert_allclose(
            sampled.features[name], result.features[name][full_rows], atol=1e-5
        )


def test_originals_features_given_are_used_instead_of_running_them_again(described):
    pixels, makers, extractor, result = described
    given = robustness.feature_tools.run_model(extractor, pixels)
    reused = robustness.describe_variants(
        extractor, pixels, makers, METHODS, (0, 90, 180, 270), batch_size=2, progress=False,
        original_features=given,
    )  # fmt: skip
    assert reused.forward_passes == result.forward_passes - 5
    for name in METHODS:
        np.testing.assert_allclose(reused.features[name], result.features[name], atol=1e-5)
    marked = robustness.describe_variants(
        extractor, pixels, {}, METHODS, progress=False, original_features=given + 1000
    )
    assert marked.features["flat"].min() >= 1000  # the given rows, not the network's
    assert marked.forward_passes == 0


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(sample=[]), "at least one"),
        (dict(sample=[1, 1]), "distinct"),
        (dict(sample=[5]), "outside"),
        (dict(original_features=np.zeros((4, 384), np.float32)), "one row per flake"),
    ],
)
def test_a_bad_sample_or_bad_original_features_are_refused(described, arguments, message):
    pixels, makers, extractor, _ = described
    with pytest.raises(ValueError, match=message):
        robustness.describe_variants(
            extractor, pixels, makers, METHODS, progress=False, **arguments
        )


def test_pool_angles_must_start_with_the_image_as_it_is(described):
    pixels, makers, extractor, _ = described
    with pytest.raises(ValueError, match="start with 0"):
        robustness.describe_variants(extractor, pixels, makers, METHODS, (90, 0), progress=False)


def test_a_variant_cannot_take_the_name_of_the_original(described):
    pixels, _, extractor, _ = described
    makers = {"original": robustness.mirror_pixels}
    with pytest.raises(ValueError, match="untouched image"):
        robustness.describe_variants(extractor, pixels, makers, METHODS, progress=False)


def test_unit_rows_have_length_one_and_l2_order_is_cosine_order():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(6, 5)).astype(np.float32) * rng.uniform(0.1, 50, (6, 1))
    rows[5] = 0
    unit = pooling.unit_rows(rows)
    np.testing.assert_allclose(np.linalg.norm(unit[:5], axis=1), 1, rtol=1e-6)
    assert not unit[5].any()
    cosine = (rows[1:5] @ rows[0]) / np.linalg.norm(rows[1:5], axis=1) / np.linalg.norm(rows[0])
    squared_l2 = ((unit[1:5] - unit[0]) ** 2).sum(axis=1)
    np.testing.assert_allclose(squared_l2, 2 - 2 * cosine, atol=1e-5)
    assert np.argsort(squared_l2).tolist() == np.argsort(-cosine).tolist()


# --- Self-retrieval ----------------------------------------------------------------------------


def crafted_retrieval_set():
    """Three flakes on a line at 0, 10 and 30; two kinds of variant, "a" and "b"."""
    points = {
        ("original", 0): 0.0,
        ("original", 1): 10.0,
        ("original", 2): 30.0,
        ("a", 0): 0.5,  # next to its original: rank 1
        ("a", 1): 2.0,  # flake 0's original (4) and variants (2.25, 9) are nearer: rank 4
        ("a", 2): 29.0,  # next to its original: rank 1
        ("b", 0): -1.0,  # rank 1
        ("b", 1): 2.1,  # sibling of ("a", 1) at 0.01 away: left out, still rank 4
        ("b", 2): 19.0,  # own original 121 away; flake 1's original 81: rank 2
    }
    versions = pd.DataFrame(list(points), columns=["version", "flake"])
    values = np.array(list(points.values()), dtype=np.float32)
    features = np.stack([values, np.zeros_like(values)], axis=1)
    return features, versions


def test_self_retrieval_ranks_the_original_among_other_flakes_only():
    features, versions = crafted_retrieval_set()
    result = robustness.self_retrieval(features, versions)
    assert result["variant"].tolist() == ["a", "a", "a", "b", "b", "b"]
    assert result["flake"].tolist() == [0, 1, 2, 0, 1, 2]
    assert result["rank"].tolist() == [1, 4, 1, 1, 4, 2]
    assert result["hit"].tolist() == [True, False, True, True, False, False]
    assert result["nearest_flake"].tolist() == [0, 0, 2, 0, 0, 1]
    np.testing.assert_allclose(
        result["distance_to_original"], [0.25, 64, 1, 1, 62.41, 121], rtol=1e-5
    )
    np.testing.assert_allclose(
        result["nearest_other_distance"], [2.25, 2.25, 361, 9, 2.56, 81], rtol=1e-5
    )


def test_self_retrieval_is_the_same_in_small_chunks():
    features, versions = crafted_retrieval_set()
    pd.testing.assert_frame_equal(
        robustness.self_retrieval(features, versions, chunk_rows=1),
        robustness.self_retrieval(features, versions),
    )


def test_finding_an_exact_duplicate_of_the_original_counts_as_finding_it():
    features, versions = crafted_retrieval_set()
    # Declare flakes 1 and 2 one photo: flake 2's variant at 19 finds flake 1's original first.
    result = robustness.self_retrieval(features, versions, flake_ids=[0, 1, 1])
    assert result.set_index(["variant", "flake"]).loc[("b", 2), "rank"] == 1


def test_self_retrieval_needs_every_variant_to_have_its_original():
    features, versions = crafted_retrieval_set()
    with pytest.raises(ValueError, match="no original"):
        robustness.self_retrieval(features[1:], versions.iloc[1:])
    with pytest.raises(ValueError, match="feature rows"):
        robustness.self_retrieval(features[:4], versions)


def test_summary_gives_recall_and_median_rank_per_variant_and_overall():
    features, versions = crafted_retrieval_set()
    results = {"crafted": robustness.self_retrieval(features, versions)}
    summary = robustness.summarise_retrieval(results).set_index("variant")
    assert summary.loc["a", "recall_at_1"] == pytest.approx(2 / 3)
    assert summary.loc["b", "recall_at_1"] == pytest.approx(1 / 3)
    assert summary.loc["all variants", "recall_at_1"] == pytest.approx(0.5)
    assert summary.loc["b", "median_rank"] == 2
    assert summary.loc["all variants", "median_rank"] == 1.5  # ranks 1, 1, 1, 2, 4, 4
    assert summary.loc["all variants", "n_variants"] == 6


# --- Agreement ---------------------------------------------------------------------------------


def ranking_of(files):
    return pd.DataFrame({"rank": range(1, len(files) + 1), "file": files})


def test_top_overlap_counts_shared_flakes_for_every_pair():
    rankings = {
        "one": ranking_of(["a", "b", "c", "d", "e"]),
        "two": ranking_of(["b", "a", "e", "d", "c"]),
        "three": ranking_of(["e", "d", "c", "b", "a"]),
    }
    table = robustness.top_overlap(rankings, 2)
    assert table.loc["one", "two"] == 2 and table.loc["one", "three"] == 0
    assert table.loc["two", "three"] == 0 and np.diag(table).tolist() == [2, 2, 2]
    assert table.equals(table.T)
    with pytest.raises(ValueError, match="different flakes"):
        robustness.top_overlap({"one": ranking_of(["a", "b"]), "x": ranking_of(["a", "z"])}, 1)


def pose_set(shift):
    """Five flakes on a line (the last far out) and one kind of variant, moved by ``shift``."""
    originals = np.array([0.0, 1.0, 2.5, 4.5, 20.0])
    variants = originals + shift
    versions = pd.DataFrame({"flake": list(range(5)) * 2, "version": ["original"] * 5 + ["x"] * 5})
    values = np.concatenate([originals, variants]).astype(np.float32)
    return values[:, None], versions, [f"f{i}" for i in range(5)]


def test_pose_stability_is_perfect_when_variants_equal_their_originals():
    features, versions, files = pose_set(np.zeros(5))
    result = robustness.pose_stability(
        features, versions, files, search.nearest_distinct_neighbours, top_n=2, draws=5
    )
    assert len(result) == 5 and (result["overlap"] == 2).all() and result["same_winner"].all()


def test_pose_stability_sees_a_ranking_that_changes_with_the_pose():
    # Flake 4 (the winner) has a variant next to flake 3, and flake 3 (second) one next to
    # flake 1: drawing flake 4's variant dethrones the winner, drawing flake 3's only the runner-up.
    features, versions, files = pose_set(np.array([0.0, 0.0, 0.0, -2.9, -15.0]))
    result = robustness.pose_stability(
        features, versions, files, search.nearest_distinct_neighbours, top_n=2, draws=40, seed=1
    )
    outcomes = set(zip(result["overlap"], result["same_winner"], strict=True))
    assert outcomes == {(2, True), (1, True), (0, False)}
    again = robustness.pose_stability(
        features, versions, files, search.nearest_distinct_neighbours, top_n=2, draws=40, seed=1
    )
    pd.testing.assert_frame_equal(result, again)


def test_pose_stability_re_poses_only_the_flakes_that_have_variants():
    # As above, but flake 4 (the winner) has no variant: it keeps its original in every draw
    # and stays on top, while flake 3's variant still moves the runner-up.
    features, versions, files = pose_set(np.array([0.0, 0.0, 0.0, -2.9, -15.0]))
    result = robustness.pose_stability(
        features[:-1], versions.iloc[:-1], files, search.nearest_distinct_neighbours, 2, 40, 1
    )
    assert result["same_winner"].all()
    assert set(result["overlap"]) == {1, 2}


def test_pose_stability_needs_every_original_and_every_kind_of_variant_or_none():
    features, versions, files = pose_set(np.zeros(5))
    more = versions.iloc[5:].assign(version="y")
    features, versions = np.vstack([features, features[5:]]), pd.concat([versions, more])
    with pytest.raises(ValueError, match="every kind"):
        robustness.pose_stability(
            features[:-1], versions.iloc[:-1], files, search.nearest_distinct_neighbours, 2
        )
    with pytest.raises(ValueError, match="original"):
        robustness.pose_stability(
            features[1:], versions.iloc[1:], files, search.nearest_distinct_neighbours, 2
        )
