"""The atlas: a deterministic layout, one point per flake, copies stacked, figure as promised."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from PIL import Image  # noqa: E402

from snowflake_tools import atlas, plots, search  # noqa: E402


def clustered_features(n_clusters=4, per_cluster=6, width=40, seed=0):
    """Rows in well-separated clusters, plus two exact copies of row 0 at the end."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (n_clusters, width))
    rows = np.repeat(centres, per_cluster, axis=0) + rng.normal(
        0, 0.5, (n_clusters * per_cluster, width)
    )
    return np.vstack([rows, rows[[0, 0]]]).astype(np.float32)


@pytest.fixture(scope="module")
def flakes(tmp_path_factory):
    """A folder of small images, their features, ranking and near-duplicate pairs."""
    tmp_path = tmp_path_factory.mktemp("flakes")
    features = clustered_features()
    features[5] = features[4] + 1e-3  # a near-duplicate pair: rows 4 and 5
    names = [f"flake{i:02d}.png" for i in range(len(features))]
    rng = np.random.default_rng(1)
    for name in names:
        pixels = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / name)
    ranking = search.rank_uniqueness(search.nearest_distinct_neighbours(features), names)
    near = search.find_near_duplicates(ranking)
    return features, names, ranking, near, tmp_path


@pytest.fixture(scope="module")
def positions(flakes):
    """The layout of ``flakes``, computed once for the figure tests."""
    return atlas.layout(flakes[0])


def test_layout_is_deterministic_one_point_per_flake_in_the_unit_square():
    features = clustered_features()
    first = atlas.layout(features, seed=3)
    assert first.shape == (len(features), 2)
    assert np.isfinite(first).all() and first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, atlas.layout(features, seed=3))


def test_exact_copies_share_one_position_and_distinct_flakes_do_not():
    features = clustered_features()
    positions = atlas.layout(features)
    copies = [0, len(features) - 2, len(features) - 1]
    assert (positions[copies] == positions[0]).all()
    distinct = np.delete(positions, copies[1:], axis=0)
    assert len(np.unique(distinct, axis=0)) == len(distinct)
    stack_of = atlas.stacks(positions)
    assert len(set(stack_of[copies])) == 1 and len(set(stack_of)) == len(distinct)


def test_layout_keeps_clusters_together():
    features = clustered_features(n_clusters=3, per_cluster=8)[:-2]
    positions = atlas.layout(features)
    cluster = np.repeat(np.arange(3), 8)
    gaps = np.linalg.norm(positions[:, None] - positions[None], axis=2)
    same = cluster[:, None] == cluster[None]
    assert gaps[same].max() < gaps[~same].min()


@pytest.mark.parametrize("n", [2, 3, 5])
def test_tiny_sets_still_get_a_map(n):
    features = np.arange(n * 4, dtype=np.float32).reshape(n, 4) ** 2
    positions = atlas.layout(features)
    assert positions.shape == (n, 2) and len(np.unique(positions, axis=0)) == n


def test_perplexity_shrinks_for_small_sets_and_stays_below_n():
    assert atlas.perplexity_for(4) < 4
    assert atlas.perplexity_for(61) == 20
    assert atlas.perplexity_for(5000) == atlas.PERPLEXITY


def test_figure_draws_one_thumbnail_per_stack_outlines_and_labels_the_top(flakes, positions):
    features, names, ranking, near, image_dir = flakes
    figure = plots.plot_atlas(positions, names, ranking, near, image_dir, top_n=3, demo="test")
    axis = figure.axes[0]
    thumbnails = [child for child in axis.get_children() if isinstance(child, AxesImage)]
    assert len(thumbnails) == len(names) - 2  # three copies, one stack
    texts = [text.get_text() for text in figure.findobj(matplotlib.text.Text)]
    assert {"#1", "#2", "#3"} <= set(texts) and "#4" not in texts
    assert "×3" in texts
    assert "DEMO: test" in texts
    joined = [line for line in axis.get_lines() if line.get_color() == "orange"]
    assert len(joined) == len(near) >= 1


def test_a_subset_of_flakes_can_be_mapped(flakes):
    features, names, ranking, near, image_dir = flakes
    subset = ranking["file"].head(6).tolist()
    rows = [names.index(name) for name in subset]
    positions = atlas.layout(features[rows])
    figure = plots.plot_atlas(positions, subset, ranking, near, image_dir, top_n=2)
    axis = figure.axes[0]
    assert sum(isinstance(child, AxesImage) for child in axis.get_children()) == 6
    with pytest.raises(ValueError, match="not in the ranking"):
        plots.plot_atlas(positions, ["nope.png"] * 6, ranking, near, image_dir)


def test_past_the_thumbnail_limit_flakes_become_points(flakes, positions):
    features, names, ranking, near, image_dir = flakes
    figure = plots.plot_atlas(positions, names, ranking, near, image_dir, max_thumbnails=10)
    axis = figure.axes[0]
    points = axis.collections[0]
    assert len(points.get_offsets()) == len(names)
    images = [child for child in axis.get_children() if isinstance(child, AxesImage)]
    top = [names.index(name) for name in ranking["file"].head(atlas.THUMBNAILS_BEYOND)]
    assert len(images) == len(np.unique(positions[top], axis=0)) > 1  # copies: one stack


def test_select_rows_keeps_the_callers_order():
    ranking = pd.DataFrame({"rank": [1, 2], "file": ["a", "b"], "distance": [2.0, 1.0]})
    assert atlas.select_rows(ranking, ["b", "a"])["rank"].tolist() == [2, 1]


def test_files_to_show_keeps_the_must_show_first_then_samples_the_rest():
    ranking = pd.DataFrame({"file": [f"f{i}.png" for i in range(50)]})
    shown = atlas.files_to_show(ranking, ["f7.png", "f3.png", "f7.png"], 10, seed=1)
    assert shown[:2] == ["f7.png", "f3.png"] and len(shown) == len(set(shown)) == 10
    assert set(shown) <= set(ranking["file"])
    assert shown == atlas.files_to_show(ranking, ["f7.png", "f3.png"], 10, seed=1)
    assert shown != atlas.files_to_show(ranking, ["f7.png", "f3.png"], 10, seed=2)
    assert atlas.files_to_show(ranking, ["f1.png"], 500)[0] == "f1.png"
    assert len(atlas.files_to_show(ranking, ["f1.png"], 500)) == 50
