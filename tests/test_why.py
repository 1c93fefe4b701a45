"""Notebook 05's arithmetic: cell maps that add up to the distance, the geometry back to the
photo, the most different set, and a planted change that lights up."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from snowflake_tools import demo, features, images, search, why

GRID = (4, 4, 8)


def random_features(n, seed=0, grid=GRID):
    return np.random.default_rng(seed).normal(size=(n, int(np.prod(grid)))).astype(np.float32)


def test_difference_maps_sum_to_the_rankings_distance_for_every_flake():
    matrix = random_features(30)
    ranking = search.rank_uniqueness(
        search.nearest_distinct_neighbours(matrix), [f"f{i}" for i in range(30)]
    )
    for flake in ranking.itertuples():
        a, b = int(flake.file[1:]), int(flake.nearest_file[1:])
        cell_map = why.difference_map(matrix[a], matrix[b], GRID)
        assert cell_map.shape == GRID[:2]
        assert cell_map.sum() == pytest.approx(flake.distance, rel=1e-5)
        assert why.shares(cell_map).sum() == pytest.approx(1.0, rel=1e-12)


def test_an_exact_copy_gives_an_all_zero_map_and_zero_novelty():
    flake = random_features(1)[0]
    assert not why.difference_map(flake, flake.copy(), GRID).any()
    assert not why.shares(why.difference_map(flake, flake, GRID)).any()
    look_alikes = np.stack([random_features(1, seed=3)[0], flake])
    assert np.allclose(why.novelty_map(flake, look_alikes, GRID), 0.0, atol=1e-9)


def test_novelty_is_never_above_the_difference_with_a_look_alike_and_sees_moved_parts():
    matrix = random_features(4, seed=1)
    novelty = why.novelty_map(matrix[0], matrix[1:], GRID)
    for other in matrix[1:]:
        assert (novelty <= why.difference_map(matrix[0], other, GRID) + 1e-9).all()
    # A look-alike holding the flake's cells in another order: no cell is new, whatever moved.
    shuffled = matrix[0].reshape(-1, GRID[-1])[::-1].reshape(-1)
    assert np.allclose(why.novelty_map(matrix[0], shuffled[None], GRID), 0.0, atol=1e-9)
    assert why.difference_map(matrix[0], shuffled, GRID).sum() > 1


@pytest.mark.parametrize("width, height", [(60, 120), (150, 50), (80, 80)])
def test_a_cells_box_holds_the_coloured_square_that_load_image_puts_in_that_cell(
    tmp_path, width, height
):
    size, cells = 64, 4
    pixels = np.zeros((height, width, 3), np.uint8)
    top, left, side = height // 3, width // 2, max(4, min(width, height) // 8)
    pixels[top : top + side, left : left + side] = (255, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    square = images.load_image(tmp_path / "photo.png", size)
    red = (square[..., 0] > 128) & (square[..., 1] < 100)
    ys, xs = np.nonzero(red)
    cell = (int(ys.mean()) * cells // size, int(xs.mean()) * cells // size)

    place = images.place_in_square(*images.shown_size(tmp_path / "photo.png"), size)
    boxes = images.cell_boxes(place, (cells, cells)).set_index(["cell_row", "cell_col"])
    box = boxes.loc[cell]
    centre_y, centre_x = top + side / 2, left + side / 2
    assert box.top <= centre_y < box.bottom and box.left <= centre_x < box.right
    assert (boxes[["top", "left"]] >= 0).all().all()
    assert (boxes["bottom"] <= height).all() and (boxes["right"] <= width).all()
    # Cells that lie wholly in the padding are left out; the others cover the photo.
    pad_x, pad_y = place.left * cells // size, place.top * cells // size
    assert len(boxes) == (cells - 2 * pad_x) * (cells - 2 * pad_y)
    assert boxes["top"].min() == 0 and boxes["bottom"].max() == height
    assert boxes["left"].min() == 0 and boxes["right"].max() == width


def test_fit_square_places_the_photo_where_place_in_square_says():
    pixels = np.full((50, 150, 3), 255, np.uint8)
    pixels[[0, -1], :] = pixels[:, [0, -1]] = 0  # a dark border: the padding is dark too
    square = np.asarray(images.fit_square(Image.fromarray(pixels), 64))
    place = images.place_in_square(150, 50, 64)
    rows = np.nonzero(square[:, 32, 0] > 128)[0]
    assert abs(rows.min() - place.top) <= 1
    assert abs(rows.max() + 1 - (place.top + place.new_height)) <= 1


def test_cell_table_has_the_csv_columns_and_shares_that_add_up_with_the_padding():
    matrix = random_features(2, seed=4)
    maps = why.explain(matrix, 0, 1, [1], GRID)
    place = images.place_in_square(150, 50, 64)  # landscape: the top and bottom rows are padding
    table = why.cell_table(1, "a.png", "b.png", maps, place)
    assert list(table.columns) == why.CELL_COLUMNS
    assert set(table["cell_row"]) == {1, 2} and len(table) == 8
    padding = why.shares(maps["difference"])[[0, 3]].sum()
    assert table["difference_share"].sum() + padding == pytest.approx(1.0)


def brute_force_greedy(matrix, size, first, min_distance=0.0):
    """Greedy farthest-point selection the slow way: all pairwise distances, recomputed."""
    full = ((matrix[:, None, :].astype(np.float64) - matrix[None]) ** 2).sum(-1)
    chosen = [first]
    while len(chosen) < size:
        to_set = full[:, chosen].min(axis=1)
        best = int(np.argmax(to_set))
        if to_set[best] <= min_distance:
            break
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", range(5))
def test_greedy_set_equals_a_brute_force_greedy(seed):
    matrix = random_features(25, seed=seed, grid=(2, 2, 3))
    rows, to_set = why.most_different_set(matrix, 7, first=seed)
    assert rows == brute_force_greedy(matrix, 7, seed)
    assert np.isnan(to_set[0]) and list(to_set[1:]) == sorted(to_set[1:], reverse=True)
    assert min(why.pairwise_distances(matrix, rows)) == pytest.approx(to_set[-1])


def test_greedy_set_never_holds_two_exact_copies_and_stops_short_rather_than_take_one():
    distinct = random_features(4, seed=2, grid=(2, 2, 3))
    matrix = distinct[[0, 1, 1, 2, 0, 3, 3, 3]]
    rows, _ = why.most_different_set(matrix, 8, first=1)
    assert len(rows) == 4
    assert sorted(search.group_copies(matrix).groups[rows]) == [0, 1, 2, 3]


def planted_mutual_pair():
    """Four tight clusters of ordinary flakes at the corners of a square, and an odd pair far
    from them and close to each other: each other's nearest, both rank 1 and 2."""
    rng = np.random.default_rng(0)
    points = []
    for corner in [(0, 0), (10, 0), (0, 10), (10, 10)]:
        points += [np.add(corner, rng.normal(scale=0.05, size=2)) for _ in range(3)]
    points += [np.array([30.0, 30.0]), np.array([30.0, 31.0])]
    matrix = np.zeros((len(points), 12), np.float32)
    matrix[:, :2] = points
    return matrix


def test_planted_mutual_pair_ranks_on_top_but_only_one_enters_the_set():
    matrix = planted_mutual_pair()
    names = [f"f{i:02d}" for i in range(len(matrix))]
    ranking = search.rank_uniqueness(search.nearest_distinct_neighbours(matrix), names)
    pair = {"f12", "f13"}
    assert set(ranking["file"].head(2)) == pair
    size = 4
    first = names.index(ranking["file"].iloc[0])
    rows, _ = why.most_different_set(matrix, size, first)
    assert len(pair & {names[r] for r in rows}) == 1
    top_rows = [names.index(name) for name in ranking["file"].head(size)]
    assert min(why.pairwise_distances(matrix, rows)) >= min(
        why.pairwise_distances(matrix, top_rows)
    )


def test_near_duplicates_never_both_enter():
    matrix = planted_mutual_pair()
    rows, to_set = why.most_different_set(matrix, len(matrix), 12, min_distance=2.0)
    assert len(rows) == 5  # the four corners and one of the pair; the rest are within 2
    assert min(to_set[1:]) > 2.0


def plant(original, donor, top, left, side):
    """``original`` with a ``side``-pixel square at ``(top, left)`` replaced by ``donor``'s."""
    pixels = original.copy()
    pixels[top : top + side, left : left + side] = donor[top : top + side, left : left + side]
    return pixels


@pytest.mark.slow  # builds VGG16 and runs 11 images through it
def test_a_planted_change_lights_up_the_cells_over_it(tmp_path):
    """Random weights (seed 0), block5_conv3 at 128 pixels (an 8×8 grid), 8 demo crystals of
    128 pixels; a 44-pixel square of another crystal pasted into three of them."""
    folder = tmp_path / "flakes"
    demo.make_demo_set(folder, count=8, side=128, progress=False)
    originals = images.list_images(folder)
    plants = {3: (10, 10), 5: (70, 20), 6: (30, 74)}  # crystal -> top, left of the new square
    side = 44
    for number, (top, left) in plants.items():
        crystal = np.asarray(Image.open(originals[number]))
        donor = np.asarray(Image.open(originals[(number + 3) % len(originals)]))
        Image.fromarray(plant(crystal, donor, top, left, side)).save(
            folder / f"planted{number}.png"
        )
    paths = images.list_images(folder)
    model = features.cut_at_layer(
        features.load_vgg16(None, 128, precision="float32")[0], "block5_conv3"
    )
    matrix = features.extract_features(model, paths, 16, progress=False).features
    grid = tuple(model.output.shape[1:])
    nearest = search.nearest_distinct_neighbours(matrix)["nearest"]
    for number, (top, left) in plants.items():
        row = paths.index(folder / f"planted{number}.png")
        assert paths[nearest[row]] == originals[number]
        maps = why.explain(matrix, row, nearest[row], [nearest[row]], grid)
        table = why.cell_table(1, "p", "o", maps, images.place_in_square(128, 128, 128))
        box = table.loc[table["difference_share"].idxmax()]
        assert box.top < top + side and box.bottom > top
        assert box.left < left + side and box.right > left
