"""How far the uniqueness ranking can be trusted, measured without labels (notebook 03).

Notebook 03 turns, mirrors and re-encodes every photo, checks whether each copy still finds its
own original (self-retrieval), compares ways of describing a flake and of scoring uniqueness,
and measures how much the most unique flakes change. The notebook shows the methods and reads
the results; this module holds the plumbing: making copies of pixels, running every copy through
the network in batches, the batched retrieval test and the agreement tables. The k-NN score
lives in ``search`` and the bar chart in ``plots``.
"""

from __future__ import annotations

import dataclasses
import io
import numbers
import time
from collections.abc import Callable, Mapping, Sequence

import faiss
import keras
import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from snowflake_tools import features as feature_tools
from snowflake_tools import images, search

#: Name of the untouched image among the copies of a flake.
ORIGINAL = "original"

#: A method turns the feature maps of one batch, one ``(n, height, width, channels)`` array per
#: pooling angle (the first one for the unturned image), into ``(n, n_values)`` features.
Method = Callable[[list[np.ndarray]], np.ndarray]


# --- Copies of a photo -------------------------------------------------------------------------


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    """RGB pixels ``(height, width, 3)`` with values 0-255 as uint8, with a clear error if not."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(
            f"expected one RGB image of shape (height, width, 3), got shape {pixels.shape}; "
            "load it with images.load_image."
        )
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def rotate_pixels(pixels: np.ndarray, degrees: float) -> np.ndarray:
    """The image turned about its centre by ``degrees`` counter-clockwise, size unchanged.

    Corners that the turn brings in from outside the frame take the background colour, so a
    turn adds no bright wedges that the network would see as features. Turns by multiples of
    90 degrees only move pixels, so they are exact. Returns uint8 ``(height, width, 3)``.
    """
    pixels = _as_uint8(pixels)
    fill = tuple(int(value) for value in images.border_colour(pixels))
    turned = Image.fromarray(pixels).rotate(
        float(degrees), resample=Image.Resampling.BICUBIC, fillcolor=fill
    )
    return np.asarray(turned)


def mirror_pixels(pixels: np.ndarray) -> np.ndarray:
    """The image flipped left to right: uint8 ``(height, width, 3)``."""
    return np.ascontiguousarray(_as_uint8(pixels)[:, ::-1])


def reencode_jpeg(pixels: np.ndarray, quality: int = 75) -> np.ndarray:
    """The image after a round trip through JPEG at ``quality`` (1-100), in memory.

    This is what re-saving or re-uploading a photo does to it: the same picture, slightly
    different pixels. Returns uint8 ``(height, width, 3)``.
    """
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral):
        raise ValueError(f"JPEG quality must be a whole number from 1 to 100, got {quality!r}.")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be from 1 to 100, got {quality}.")
    buffer = io.BytesIO()
    Image.fromarray(_as_uint8(pixels)).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def copy_makers(
    angles: Sequence[float] = (30, 90, 180),
    mirror: bool = True,
    jpeg_quality: int | None = 75,
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The kinds of copy to make of every flake, by name: turned by each of ``angles``
    (degrees), mirrored, and re-encoded as JPEG at ``jpeg_quality`` (None: no JPEG copy).

    Each maker takes the pixels of one image and returns the copy's pixels (uint8, same size).
    """
    makers: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for angle in angles:
        if isinstance(angle, bool) or not isinstance(angle, numbers.Real):
            raise ValueError(f"ANGLES must be numbers of degrees, got {angle!r}.")
        if float(angle) % 360 == 0:
            raise ValueError(
                f"ANGLES holds {angle}, a whole turn: that copy would equal its original and "
                "test nothing. Use angles such as 30, 90 or 180."
            )
        name = f"rotated {float(angle):g}°"
        if name in makers:
            raise ValueError(f"ANGLES lists {angle} twice.")
        makers[name] = lambda pixels, angle=float(angle): rotate_pixels(pixels, angle)
    if mirror:
        makers["mirrored"] = mirror_pixels
    if jpeg_quality is not None:
        reencode_jpeg(np.zeros((8, 8, 3), np.uint8), jpeg_quality)  # a bad quality fails now
        makers[f"JPEG q={jpeg_quality}"] = lambda pixels: reencode_jpeg(pixels, jpeg_quality)
    if not makers:
        raise ValueError("No copies to make: give at least one angle, mirror or a JPEG quality.")
    return makers


# --- Describing every copy with every method ---------------------------------------------------


@dataclasses.dataclass
class Described:
    """What :func:`describe_copies` returns.

    Attributes:
        variants: DataFrame with one row per described image and columns ``flake`` (row of
            the original in ``pixels``) and ``copy`` (``"original"`` or the kind of copy).
            Rows go copy kind by copy kind: row ``k * n_flakes + i`` is copy kind ``k`` of
            flake ``i``, the originals first.
        features: method name -> float32 array ``(n_rows, n_values)``, rows as in ``variants``.
        forward_passes: images run through the network (copies times pooling angles).
        seconds: wall time.
    """

    variants: pd.DataFrame
    features: dict[str, np.ndarray]
    forward_passes: int
    seconds: float


def describe_copies(
    extractor: keras.Model,
    pixels: np.ndarray,
    makers: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    methods: Mapping[str, Method],
    pool_angles: Sequence[float] = (0,),
    batch_size: int = 16,
    progress: bool = True,
) -> Described:
    """Features of every flake and every copy of it, under every method (notebook 03, step 4).

    Each image (original or copy) is also turned by each of ``pool_angles`` (the first must be
    0, the image as it is) and run through ``extractor`` with ``features.run_model``; each
    method then gets the list of feature maps, one ``(n, height, width, channels)`` array per
    angle. Work goes one batch of flakes at a time, so memory holds the features plus one
    batch of feature maps.

    Args:
        extractor: a model cut at a convolutional layer (``features.cut_at_layer``).
        pixels: ``(n_flakes, size, size, 3)`` RGB values 0-255, one original per flake.
        makers: copy kind -> function making that copy (``copy_makers``).
        methods: method name -> function of the feature maps (see ``Method``).
        pool_angles: turns, in degrees, that every image is run at.
    """
    pool_angles = [float(angle) for angle in pool_angles]
    if not pool_angles or pool_angles[0] != 0:
        raise ValueError(
            f"POOL_ANGLES must start with 0 (the image as it is), got {pool_angles}; "
            "e.g. (0, 90, 180, 270)."
        )
    if len(pixels) == 0:
        raise ValueError("No images to describe.")
    if batch_size < 1:
        raise ValueError(f"BATCH_SIZE must be 1 or more, got {batch_size}.")
    if ORIGINAL in makers:
        raise ValueError(f"{ORIGINAL!r} names the untouched image; give the copy another name.")
    started = time.perf_counter()
    kinds = {ORIGINAL: None, **makers}
    n_flakes = len(pixels)
    n_rows = n_flakes * len(kinds)
    map_shape = tuple(int(size) for size in extractor.output.shape[1:])
    described: dict[str, np.ndarray] = {}
    bar = tqdm(
        total=n_rows * len(pool_angles), desc="Describing copies", unit="img", disable=not progress
    )
    for k, make in enumerate(kinds.values()):
        for start in range(0, n_flakes, batch_size):
            batch = pixels[start : start + batch_size]
            if make is not None:
                batch = np.stack([make(image) for image in batch])
            maps = []
            for angle in pool_angles:
                turned = batch if angle == 0 else np.stack([rotate_pixels(p, angle) for p in batch])
                maps.append(feature_tools.run_model(extractor, turned).reshape(-1, *map_shape))
                bar.update(len(batch))
            rows = slice(k * n_flakes + start, k * n_flakes + start + len(batch))
            for name, method in methods.items():
                values = np.asarray(method(maps), dtype=np.float32)
                if name not in described:
                    described[name] = np.empty((n_rows, values.shape[1]), dtype=np.float32)
                described[name][rows] = values
    bar.close()
    variants = pd.DataFrame(
        {
            "flake": np.tile(np.arange(n_flakes), len(kinds)),
            "copy": np.repeat(list(kinds), n_flakes),
        }
    )
    return Described(variants, described, n_rows * len(pool_angles), time.perf_counter() - started)


# --- Self-retrieval ----------------------------------------------------------------------------


def self_retrieval(
    features: np.ndarray,
    variants: pd.DataFrame,
    flake_ids: Sequence[int] | None = None,
    chunk_rows: int = 1024,
) -> pd.DataFrame:
    """Does each copy find its own original? One row per copy (notebook 03, step 5).

    The database is every row of ``features``, originals and copies. A copy's search leaves
    out itself and the other copies of its own flake, so its only competitors are the other
    flakes, in any of their poses.

    Args:
        features: float array ``(n_rows, n_values)``, rows as in ``variants``.
        variants: DataFrame with ``flake`` and ``copy`` columns (:class:`Described`).
        flake_ids: optional, one number per flake: flakes with the same number are the same
            photo (exact duplicates in the folder, e.g. from ``search.exact_duplicate_groups``
            of the pixels), and finding any of their originals counts as finding the original.
        chunk_rows: copies searched per batched distance computation (bounds memory).

    Returns:
        Columns ``flake, copy, rank, hit, nearest_flake, distance_to_original,
        nearest_other_distance``: ``rank`` is 1 plus the number of other flakes' images
        strictly nearer to the copy than its original (1 = the original is the nearest
        neighbour), ``hit`` is ``rank == 1`` (recall@1), distances are squared L2.
    """
    features = search.check_features(features)
    if len(features) != len(variants):
        raise ValueError(f"got {len(features)} feature rows for {len(variants)} variants")
    flake = variants["flake"].to_numpy(dtype=np.int64)
    is_original = variants["copy"].to_numpy() == ORIGINAL
    ids = flake if flake_ids is None else np.asarray(flake_ids, dtype=np.int64)[flake]
    missing = np.setdiff1d(flake[~is_original], flake[is_original])
    if len(missing):
        raise ValueError(f"copies of flakes {missing[:10].tolist()} have no original row")
    queries = np.flatnonzero(~is_original)
    rank = np.empty(len(queries), dtype=np.int64)
    to_original = np.empty(len(queries), dtype=np.float64)
    to_other = np.empty(len(queries), dtype=np.float64)
    nearest_other = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk_rows):
        part = queries[start : start + chunk_rows]
        distances = faiss.pairwise_distances(features[part], features).astype(np.float64)
        same = ids[part][:, None] == ids[None, :]
        original = np.where(same & is_original[None, :], distances, np.inf).min(axis=1)
        others = np.where(same, np.inf, distances)
        done = slice(start, start + len(part))
        rank[done] = 1 + (others < original[:, None]).sum(axis=1)
        to_original[done] = original
        nearest_other[done] = others.argmin(axis=1)
        to_other[done] = others.min(axis=1)
    hit = rank == 1
    return pd.DataFrame(
        {
            "flake": flake[queries],
            "copy": variants["copy"].to_numpy()[queries],
            "rank": rank,
            "hit": hit,
            "nearest_flake": np.where(hit, flake[queries], flake[nearest_other]),
            "distance_to_original": to_original,
            "nearest_other_distance": np.where(np.isfinite(to_other), to_other, np.nan),
        }
    )


def summarise_retrieval(results: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Recall@1 and median rank of the original, per method and kind of copy.

    Args:
        results: method name -> :func:`self_retrieval` output.

    Returns:
        Columns ``method, copy, recall_at_1, median_rank, copies``, with an ``"all copies"``
        row per method; methods keep their order, copies the order they were made in.
    """
    rows = []
    for method, table in results.items():
        for copy, group in [*table.groupby("copy", sort=False), ("all copies", table)]:
            rows.append(
                {
                    "method": method,
                    "copy": copy,
                    "recall_at_1": float(group["hit"].mean()),
                    "median_rank": float(group["rank"].median()),
                    "copies": len(group),
                }
            )
    return pd.DataFrame(rows, columns=["method", "copy", "recall_at_1", "median_rank", "copies"])


# --- Agreement between rankings ---------------------------------------------------------------


def top_overlap(rankings: Mapping[str, pd.DataFrame], top_n: int) -> pd.DataFrame:
    """How many of the ``top_n`` most unique flakes two rankings share, for every pair.

    Args:
        rankings: name -> ranking (``search.rank_uniqueness`` output) of the same flakes.

    Returns:
        A square DataFrame of counts (0 to ``top_n``), names as rows and columns; the
        diagonal is ``top_n`` (or fewer, for fewer flakes).
    """
    if top_n < 1:
        raise ValueError(f"TOP_N must be 1 or more, got {top_n}.")
    names = list(rankings)
    all_files = [set(ranking["file"]) for ranking in rankings.values()]
    if any(files != all_files[0] for files in all_files):
        raise ValueError("the rankings cover different flakes; rank the same images each time")
    tops = [set(ranking["file"].head(top_n)) for ranking in rankings.values()]
    counts = [[len(a & b) for b in tops] for a in tops]
    return pd.DataFrame(counts, index=pd.Index(names), columns=pd.Index(names))


def pose_stability(
    features: np.ndarray,
    variants: pd.DataFrame,
    files: Sequence[str],
    score: Callable[[np.ndarray], pd.DataFrame],
    top_n: int,
    draws: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Would the top flakes stay on top if every photo had been taken in another pose?

    Each draw gives every flake one of its images at random (the original or any copy),
    ranks the flakes with ``score`` and compares the result with the ranking of the originals.

    Args:
        features: ``(n_rows, n_values)``, rows as in ``variants`` (:class:`Described`), every
            flake having every kind of copy.
        files: file name of each flake, by flake number.
        score: features ``(n_flakes, n_values)`` -> neighbours DataFrame, e.g.
            ``search.nearest_distinct_neighbours`` or ``lambda f: search.knn_uniqueness(f, 3)``.
        draws: how many random poses to try; ``seed`` fixes them.

    Returns:
        One row per draw: ``overlap`` (how many of the ``top_n`` stay in the top ``top_n``)
        and ``same_winner`` (whether the most unique flake stays the most unique).
    """
    kinds = list(dict.fromkeys(variants["copy"]))
    n_flakes = len(files)
    row_of = np.full((len(kinds), n_flakes), -1, dtype=np.int64)
    kind_number = {kind: k for k, kind in enumerate(kinds)}
    row_of[variants["copy"].map(kind_number).to_numpy(), variants["flake"].to_numpy()] = np.arange(
        len(variants)
    )
    if (row_of < 0).any() or ORIGINAL not in kind_number:
        raise ValueError("every flake needs its original and every kind of copy")

    def top(rows: np.ndarray) -> list[str]:
        ranking = search.rank_uniqueness(score(features[rows]), list(files))
        return ranking["file"].head(top_n).tolist()

    reference = top(row_of[kind_number[ORIGINAL]])
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(draws):
        drawn = top(row_of[rng.integers(0, len(kinds), n_flakes), np.arange(n_flakes)])
        results.append(
            {"overlap": len(set(drawn) & set(reference)), "same_winner": drawn[0] == reference[0]}
        )
    return pd.DataFrame(results, columns=["overlap", "same_winner"])
