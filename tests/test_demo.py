"""Tests for the synthetic snow crystals of the offline demo set (snowflake_tools.demo)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from snowflake_tools import demo, files

SIDE = 64


def rotate_axial(mask: np.ndarray) -> np.ndarray:
    """Turn a square hex-lattice mask by 60 degrees about its centre: (q, r) -> (-r, q + r)."""
    half = (mask.shape[0] - 1) // 2
    rows, columns = np.nonzero(mask)
    r, q = rows - half, columns - half
    turned = np.zeros_like(mask)
    turned[q + r + half, -r + half] = True
    return turned


def outline_profile(pixels: np.ndarray, rings: int = 8) -> np.ndarray:
    """How much of each ring around the centre the crystal covers, and how ragged its edge is.

    Measured on the crystal's silhouette, with radii relative to its size, so neither its
    turn, its size in the frame nor the brightness of the backdrop matters.
    """
    gray = pixels.astype(np.float64).mean(axis=-1)
    side = gray.shape[0]
    corners = np.concatenate([gray[:6, :6], gray[:6, -6:], gray[-6:, :6], gray[-6:, -6:]])
    backdrop = np.median(corners)
    ice = gray > backdrop + 0.2 * (gray.max() - backdrop)
    rows, columns = np.mgrid[0:side, 0:side] - (side - 1) / 2
    radius = np.hypot(rows, columns)
    ring = np.minimum((radius / np.percentile(radius[ice], 98) * rings).astype(int), rings)
    covered = np.bincount(ring.ravel(), ice.ravel(), rings + 1) / np.bincount(ring.ravel())
    edge = (ice[1:] != ice[:-1]).sum() + (ice[:, 1:] != ice[:, :-1]).sum()
    return np.append(covered[:rings], edge / ice.sum())


def test_unknown_family_is_refused_with_the_valid_names():
    with pytest.raises(ValueError) as error:
        demo.generate_crystal("snowman", seed=1, side=SIDE)
    for family in demo.FAMILIES:
        assert family in str(error.value)


@pytest.mark.parametrize("family", demo.FAMILIES)
def test_every_family_gives_a_bright_crystal_on_a_dark_rgb_background(family):
    pixels = demo.generate_crystal(family, seed=3, side=SIDE)
    assert pixels.shape == (SIDE, SIDE, 3)
    assert pixels.dtype == np.uint8
    corners = np.concatenate([pixels[:6, :6], pixels[:6, -6:], pixels[-6:, :6], pixels[-6:, -6:]])
    assert corners.mean() < 40, "the backdrop should be dark"
    assert pixels.max() > 150, "the crystal should be bright"
    bright = pixels.mean(axis=-1) > 100
    assert 0.03 < bright.mean() < 0.8, "the crystal should fill part of the frame, not all of it"
    # Blue backdrop, bluish-white ice: blue never falls far below red on average.
    assert pixels[..., 2].mean() >= pixels[..., 0].mean()


def test_same_seed_gives_identical_png_bytes():
    first = demo.generate_crystal("stellar_dendrite", seed=11, side=SIDE)
    second = demo.generate_crystal("stellar_dendrite", seed=11, side=SIDE)
    assert np.array_equal(first, second)
    assert demo._png_bytes(first) == demo._png_bytes(second)


def test_different_seeds_give_different_crystals_of_one_family():
    crystals = [demo.generate_crystal("sectored_plate", seed, side=SIDE) for seed in (1, 2, 3)]
    for i in range(len(crystals)):
        for j in range(i + 1, len(crystals)):
            difference = np.abs(crystals[i].astype(int) - crystals[j].astype(int)).mean()
            assert difference > 5, f"seeds {i + 1} and {j + 1} look the same"


def test_quick_crystal_is_a_bright_crystal_cut_from_the_middle_of_a_square_photo():
    square = demo.quick_crystal(4, (120, 120))
    wide = demo.quick_crystal(4, (120, 100))
    tall = demo.quick_crystal(4, (100, 120))
    assert wide.shape == (100, 120, 3) and tall.shape == (120, 100, 3)
    assert wide.dtype == np.uint8
    assert np.array_equal(wide, square[10:110]) and np.array_equal(tall, square[:, 10:110])
    assert square.max() > 150 and np.median(square) < 60, "a bright crystal on a dark backdrop"
    assert np.abs(square.astype(int) - demo.quick_crystal(5, (120, 120))).mean() > 5


def test_fixture_images_are_the_quick_crystals_of_demo(make_image):
    data = make_image(7, (72, 64), "PNG")
    with Image.open(io.BytesIO(data)) as image:
        assert np.array_equal(np.asarray(image), demo.quick_crystal(7, (72, 64)))


def test_blur_is_a_gaussian_blur_with_edges_repeated():
    ndimage = pytest.importorskip("scipy.ndimage")
    image = np.random.default_rng(0).random((40, 30, 3)).astype(np.float32)
    for sigma in (0.4, 1.6, 6.0):
        expected = ndimage.gaussian_filter(
            image, sigma, mode="nearest", radius=int(np.ceil(3 * sigma)), axes=(0, 1)
        )
        assert np.allclose(demo._blur(image, sigma), expected, atol=1e-6)


def test_grown_state_is_six_fold_symmetric_without_noise():
    state = demo.grow_crystal(1.0, 0.4, 0.001, steps=3000, grid_radius=24)
    ice = state >= 1
    assert state.dtype == np.float32 and state.shape[0] == state.shape[1]
    x, y = demo.lattice_xy(state.shape)
    assert np.hypot(x[ice], y[ice]).max() > 15, "the crystal should have grown arms"
    assert np.array_equal(rotate_axial(ice), ice)
    assert np.array_equal(ice.T, ice), "mirror image across a lattice diagonal"
    # A 60-degree turn that ignored the lattice's shear would not map the ice onto itself.
    assert not np.array_equal(np.rot90(ice), ice)


def test_noise_breaks_the_symmetry_only_a_little():
    quiet = demo.grow_crystal(1.0, 0.6, 0.005, steps=3000, grid_radius=30) >= 1
    noisy = demo.grow_crystal(
        1.0, 0.6, 0.005, steps=3000, grid_radius=30, rng=np.random.default_rng(1), noise=0.003
    )
    noisy = noisy >= 1
    assert not np.array_equal(rotate_axial(noisy), noisy)
    overlap = (rotate_axial(noisy) & noisy).sum() / noisy.sum()
    assert overlap > 0.8
    assert abs(int(noisy.sum()) - int(quiet.sum())) < 0.2 * quiet.sum()


def test_rendered_crystal_looks_alike_turned_by_60_degrees_but_not_by_30():
    pixels = demo.generate_crystal("stellar_plate", seed=5, side=96)
    image = Image.fromarray(pixels)
    gray = pixels.astype(float).mean(axis=-1)

    def difference(angle):
        turned = np.asarray(image.rotate(angle, resample=Image.BILINEAR)).astype(float)
        return np.abs(turned.mean(axis=-1) - gray)[20:-20, 20:-20].mean()

    assert difference(60) < 0.6 * difference(30)
    assert difference(120) < 0.6 * difference(90)


def test_grow_crystal_explains_bad_parameters():
    with pytest.raises(ValueError, match="beta"):
        demo.grow_crystal(1.0, 1.2, 0.0, steps=10, grid_radius=10)
    with pytest.raises(ValueError, match="alpha"):
        demo.grow_crystal(0.0, 0.4, 0.0, steps=10, grid_radius=10)
    with pytest.raises(ValueError, match="grid_radius"):
        start = demo.grow_crystal(1.0, 0.4, 0.0, steps=10, grid_radius=10)
        demo.grow_crystal(1.0, 0.4, 0.0, steps=10, grid_radius=12, start=start)


def test_render_refuses_a_state_without_ice():
    with pytest.raises(ValueError, match="has none"):
        demo.render_crystal(np.zeros((21, 21), dtype=np.float32), side=SIDE)


def test_plan_mixes_regular_and_a_few_singular_crystals():
    plan = demo.plan_demo_set(60, seed=0)
    families = pd.Series([family for family, _, _ in plan]).value_counts()
    assert len(plan) == 60
    assert families[list(demo.SINGULAR_FAMILIES)].sum() == 4
    assert set(families[list(demo.REGULAR_FAMILIES)]) == {11, 12}
    assert len({crystal_seed for _, _, crystal_seed in plan}) == 60


def test_plan_for_fewer_crystals_than_families():
    plan = demo.plan_demo_set(6, seed=2)
    families = [family for family, _, _ in plan]
    assert families == [*demo.REGULAR_FAMILIES, demo.SINGULAR_FAMILIES[0]]
    assert [family for family, _, _ in demo.plan_demo_set(3)] == list(demo.REGULAR_FAMILIES[:3])
    assert {family for family, _, _ in demo.plan_demo_set(9)} == set(demo.FAMILIES)
    with pytest.raises(ValueError, match="count"):
        demo.plan_demo_set(0)


def test_plan_keeps_each_crystal_when_the_count_changes():
    small = set(demo.plan_demo_set(20, seed=1))
    large = set(demo.plan_demo_set(60, seed=1))
    assert small <= large
    assert not small & set(demo.plan_demo_set(20, seed=2)), "another seed, other crystals"


def test_make_demo_set_writes_images_and_manifest(tmp_path):
    written = demo.make_demo_set(tmp_path, count=6, seed=0, side=32, progress=False)
    assert list(written.columns) == files.MANIFEST_COLUMNS
    assert len(written) == 6
    manifest = files.read_manifest(tmp_path)
    assert sorted(manifest["file"]) == sorted(written["file"])
    for row in manifest.itertuples():
        family = row.file.removeprefix("demo-").rsplit("-", 1)[0]
        assert family in demo.FAMILIES
        assert row.url.startswith(f"demo:{family}/")
        assert row.page == "demo:"
        assert files.sha256_file(tmp_path / row.file) == row.sha256
        with Image.open(tmp_path / row.file) as image:
            assert image.mode == "RGB" and image.size == (32, 32) == (row.width, row.height)
        crystal_seed = int(row.url.rsplit("/", 1)[1])
        saved = np.asarray(Image.open(tmp_path / row.file))
        assert np.array_equal(saved, demo.generate_crystal(family, crystal_seed, side=32))
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_make_demo_set_again_rewrites_nothing_and_repairs_damage(tmp_path):
    demo.make_demo_set(tmp_path, count=6, side=32, progress=False)
    paths = sorted(tmp_path.iterdir())
    before = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in paths}

    demo.make_demo_set(tmp_path, count=6, side=32, progress=False)
    after = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in paths}
    assert after == before

    damaged = next(path for path in paths if path.suffix == ".png")
    damaged.write_bytes(b"not a png")
    demo.make_demo_set(tmp_path, count=6, side=32, progress=False)
    assert damaged.read_bytes() == before[damaged.name][1]


def test_make_demo_set_keeps_other_rows_of_the_manifest(tmp_path):
    other = {
        "file": "real.jpg",
        "url": "https://example.org/real.jpg",
        "page": "https://example.org/",
        "sha256": "0" * 64,
        "width": 10,
        "height": 10,
    }
    files.write_manifest(tmp_path, [other])
    demo.make_demo_set(tmp_path, count=2, side=32, progress=False)
    manifest = files.read_manifest(tmp_path)
    assert len(manifest) == 3
    assert manifest.set_index("file").loc["real.jpg", "url"] == other["url"]


@pytest.fixture(scope="module")
def family_samples():
    """Four small crystals of every regular family: {family: [pixels, ...]}."""
    return {
        family: [demo.generate_crystal(family, seed, side=SIDE) for seed in (21, 22, 23, 24)]
        for family in demo.REGULAR_FAMILIES
    }


def within_and_across(looks: dict[str, list[np.ndarray]], family: str) -> tuple[float, float]:
    """Mean distance between crystals of ``family``, and from them to all other crystals."""
    own = looks[family]
    within = [np.linalg.norm(a - b) for i, a in enumerate(own) for b in own[i + 1 :]]
    across = [
        np.linalg.norm(a - b)
        for other, theirs in looks.items()
        if other != family
        for a in own
        for b in theirs
    ]
    return float(np.mean(within)), float(np.mean(across))


def test_crystals_of_a_family_are_closer_in_pixels_than_crystals_of_other_families(
    family_samples,
):
    looks = {
        family: [pixels.astype(float).ravel() / 255 for pixels in samples]
        for family, samples in family_samples.items()
    }
    for family in looks:
        within, across = within_and_across(looks, family)
        assert within < across, f"{family}: {within:.2f} within, {across:.2f} across"


def test_families_are_told_apart_by_their_outline(family_samples):
    looks = {
        family: [outline_profile(pixels) for pixels in samples]
        for family, samples in family_samples.items()
    }
    for family in looks:
        within, across = within_and_across(looks, family)
        assert across > 2 * within, f"{family}: {within:.2f} within, {across:.2f} across"
    # Leave-one-out nearest neighbour: almost every crystal's closest look-alike is kin.
    features = np.array([look for samples in looks.values() for look in samples])
    labels = [family for family, samples in looks.items() for _ in samples]
    distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    kin = [labels[i] == labels[j] for i, j in enumerate(distances.argmin(axis=1))]
    assert np.mean(kin) >= 0.85
