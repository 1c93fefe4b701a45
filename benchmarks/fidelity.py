"""Fidelity: does bfloat16 extraction rank the flakes as float32 does?

Both precisions run the same VGG16 (random weights, one seed: ImageNet's cannot be downloaded
everywhere) over the same files; everything after extraction is the notebook's own pipeline.
``tests/test_precision.py`` asserts on these numbers; ``make bench`` prints them as a table.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from snowflake_tools import demo, features, search
from snowflake_tools import fidelity as guard

LAYER = "block5_conv3"
TOP_N = 5  # notebook 03's TOP_N, the larger of the two notebooks'


def plant_copies(paths: list[Path]) -> list[Path]:
    """Add an exact copy of the first file and a re-encoded (JPEG) copy of the second.

    The first lands in an exact-duplicate group, the second in a near-duplicate pair: the two
    things a ranking must keep whatever the precision. Returns all paths, sorted.
    """
    folder = paths[0].parent
    shutil.copyfile(paths[0], folder / f"copy-of-{paths[0].name}")
    with Image.open(paths[1]) as image:
        image.convert("RGB").save(folder / f"near-{paths[1].stem}.jpg", quality=92)
    return sorted(path for path in folder.iterdir() if path.suffix in (".png", ".jpg"))


def demo_set(folder: Path, count: int, side: int = 256) -> list[Path]:
    """``count`` demo crystals (``demo.make_demo_set``) plus the planted copies."""
    demo.make_demo_set(folder, count, side=side, progress=False)
    return plant_copies(sorted(folder.glob("demo-*.png")))


def photo_like_set(folder: Path, count: int, side: int = 256, seed: int = 0) -> list[Path]:
    """``count`` photo-like JPEG files plus the planted copies.

    Natural photos have power spectra falling roughly as 1 / frequency^2 (slopes vary from
    scene to scene); these are such noise, with a slope, colour cast, contrast and exposure of
    their own and a soft bright subject, JPEG-compressed like photos.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(side), np.fft.fftfreq(side)))
    frequency = np.maximum(frequency, 1.0 / side)
    y, x = np.mgrid[-1 : 1 : side * 1j, -1 : 1 : side * 1j]
    paths = []
    for number in range(count):
        spectrum = rng.standard_normal((3, side, side)) + 1j * rng.standard_normal((3, side, side))
        texture = np.fft.ifft2(spectrum * frequency ** -rng.uniform(0.7, 1.3)).real
        texture = (texture - texture.mean()) / texture.std()
        colour = rng.uniform(0.6, 1.4, 3) * rng.uniform(15, 50)  # cast and contrast
        centre, width = rng.uniform(-0.6, 0.6, 2), rng.uniform(0.02, 0.4)
        subject = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / width)
        pixels = rng.uniform(50, 170) + colour * texture.transpose(1, 2, 0)
        pixels += rng.uniform(30, 120) * subject[..., None]
        paths.append(folder / f"photo-{number:03d}.jpg")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(paths[-1], quality=90)
    return plant_copies(paths)


def rank(paths: list[Path], image_size: int, precision: str, seed: int = 0) -> tuple:
    """Features, ranking and near-duplicate pairs of ``paths``, as notebook 02 makes them."""
    model, _ = features.load_vgg16(None, image_size, seed, precision=precision)
    extracted = features.extract_features(
        features.cut_at_layer(model, LAYER), paths, progress=False
    )
    neighbours = search.nearest_distinct_neighbours(extracted.features)
    ranking = search.rank_uniqueness(neighbours, [path.name for path in extracted.paths])
    return extracted.features, ranking, search.find_near_duplicates(ranking)


def compare_precisions(paths: list[Path], image_size: int, top_n: int = TOP_N) -> dict:
    """bfloat16 against float32 on ``paths``: the numbers of the fidelity table."""
    full, full_ranking, full_near = rank(paths, image_size, features.FLOAT32)
    half, half_ranking, half_near = rank(paths, image_size, features.BFLOAT16)
    difference = np.linalg.norm(half - full, axis=1) / np.linalg.norm(full, axis=1)
    full_distance = full_ranking.set_index("file")["distance"]
    half_distance = half_ranking.set_index("file")["distance"].reindex(full_distance.index)
    top = full_ranking.distance.drop_duplicates().to_numpy()[: top_n + 1]  # copies tie
    median = full_distance.median()
    # What PRECISION = "auto" ends with on this machine: its choice, and after a bfloat16
    # choice, notebook 02's close-call check, which may send the ranking back to float32
    chosen = features.resolve_precision(features.AUTO)
    calls = guard.close_calls(half_ranking, top_n, search.NEAR_DUPLICATE_RATIO)
    falls_back = chosen == features.BFLOAT16 and len(calls) > 0
    auto_ranking = full_ranking if chosen == features.FLOAT32 or falls_back else half_ranking
    return {
        "images": len(paths),
        "image_size": image_size,
        "median_relative_difference": float(np.median(difference)),
        "spearman": float(full_distance.rank().corr(half_distance.rank())),
        "top_n": top_n,
        "top_n_identical": full_ranking.file[:top_n].tolist() == half_ranking.file[:top_n].tolist(),
        # bfloat16 can only reorder flakes whose float32 distances lie closer than it moves
        # them; both are given as fractions of the median distance
        "largest_distance_change": float((half_distance - full_distance).abs().max() / median),
        "smallest_top_gap": float((-np.diff(top)).min() / median),
        "same_copies": bool(
            np.array_equal(search.exact_duplicate_groups(full), search.exact_duplicate_groups(half))
        ),
        "same_near_duplicates": _pairs(full_near) == _pairs(half_near),
        "copies_found": int((full_ranking.duplicates > 0).sum()),
        "near_duplicates_found": len(full_near),
        "close_call_margin": guard.BFLOAT16_MARGIN,
        "close_calls": calls.to_dict("records"),
        "auto_uses": features.FLOAT32 if falls_back else chosen,
        "auto_top_n_identical": auto_ranking.file[:top_n].tolist()
        == full_ranking.file[:top_n].tolist(),
    }


def _pairs(near_duplicates) -> set[frozenset[str]]:
    """The near-duplicate pairs as a set, whatever their order."""
    return set(map(frozenset, zip(near_duplicates.file, near_duplicates.nearest_file, strict=True)))
