"""How far the uniqueness ranking can be trusted, measured without labels (notebook 03).

Notebook 03 makes turned, mirrored and re-encoded variants of the photos, checks whether each
variant still finds its own original (self-retrieval), compares ways of describing a flake and
of scoring uniqueness, and measures how much the most unique flakes change. The notebook shows
the methods and reads the results; this module holds the plumbing: making variants of pixels,
running every version through the network in batches, the batched retrieval test and the
agreement tables. The k-NN score lives in ``search`` and the bar chart in ``plots``.
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

#: Name of the untouched image among the versions of a flake (the original and its variants).
ORIGINAL = "original"

#: A method turns the feature maps of one batch, one ``(n, height, width, channels)`` array per
#: pooling angle (the first one for the unturned image), into ``(n, n_values)`` features.
Method = Callable[[list[np.ndarray]], np.ndarray]


# --- Variants of a photo -----------------------------------------------------------------------


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


def variant_makers(
    angles: Sequence[float] = (30, 90, 180),
    mirror: bool = True,
    jpeg_quality: int | None = 75,
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The variants to make of a flake, by name: turned by each of ``angles`` (degrees),
    mirrored, and re-encoded as JPEG at ``jpeg_quality`` (None: no JPEG variant).

    Each maker takes the pixels of one image and returns the variant's pixels (uint8, same size).
    """
    makers: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for angle in angles:
        if isinstance(angle, bool) or not isinstance(angle, numbers.Real):
            raise ValueError(f"ANGLES must be numbers of degrees, got {angle!r}.")
        if float(angle) % 360 == 0:
            raise ValueError(
                f"ANGLES holds {angle}, a whole turn: that variant would equal its original and "
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
        raise ValueError("No variants to make: give at least one angle, mirror or a JPEG quality.")
    return makers


# --- Describing every version with every method ----------------------------------------------


@dataclasses.dataclass
class Described:
    """What :func:`describe_variants` returns.

    Attributes:
        versions: DataFrame with one row per described image and columns ``flake`` (row of
            the original in ``pixels``) and ``version`` (``"original"`` or the variant's name).
            The originals of every flake come first, in flake order; then each kind of
            variant in turn, for the sampled flakes in sample order.
        features: method name -> float32 array ``(n_rows, n_values)``, rows as in ``versions``.
        forward_passes: images run through the network (versions times pooling angles, less
            the originals' unturned maps taken from ``original_features``).
        seconds: wall time.
    """

    versions: pd.DataFrame
    features: dict[str, np.ndarray]
    forward_passes: int
    seconds: float


def describe_variants(
    extractor: keras.Model,
    pixels: np.ndarray,
    makers: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    methods: Mapping[str, Method],
    pool_angles: Sequence[float] = (0,),
    batch_size: int = 16,
    progress: bool = True,
    sample: Sequence[int] | None = None,
    original_features: np.ndarray | None = None,
) -> Described:
    """Features of every flake and of the variants of the sampled flakes, under every method
    (notebook 03, step 4).

    Each image (original or variant) is also turned by each of ``pool_angles`` (the first must
    be 0, the image as it is) and run through ``extractor`` with ``features.run_model``; each
    method then gets the list of feature maps, one ``(n, height, width, channels)`` array per
    angle. Work goes one batch of flakes at a time, so memory holds the features plus one
    batch of feature maps.

    Args:
        extractor: a model cut at a convolutional layer (``features.cut_at_layer``).
        pixels: ``(n_flakes, size, size, 3)`` RGB values 0-255, one original per flake.
        makers: variant name -> function making that variant (``variant_makers``).
        methods: method name -> function of the feature maps (see ``Method``).
        pool_angles: turns, in degrees, that every image is run at.
        sample: rows of ``pixels`` whose variants are described; None: every flake. The
            originals of every flake are described either way.
        original_features: optional ``(n_flakes, n_values)`` flattened maps of the unturned
            originals from this same ``extractor`` (``features.extract_features``, which may
            read them from notebook 02's cache): used instead of running them again.
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
        raise ValueError(f"{ORIGINAL!r} names the untouched image; give the variant another name.")
    started = time.perf_counter()
    n_flakes = len(pixels)
    sample = _checked_sample(sample, n_flakes)
    map_shape = tuple(int(size) for size in extractor.output.shape[1:])
    if original_features is not None and np.shape(original_features) != (
        n_flakes,
        int(np.prod(map_shape)),
    ):
        raise ValueError(
            f"original_features has shape {np.shape(original_features)}, expected "
            f"({n_flakes}, {int(np.prod(map_shape))}): one row per flake from this extractor."
        )
    jobs = [(ORIGINAL, None, np.arange(n_flakes))]
    jobs += [(name, make, sample) for name, make in makers.items()]
    n_rows = sum(len(flakes) for _, _, flakes in jobs)
    n_passes = n_rows * len(pool_angles) - (n_flakes if original_features is not None else 0)
    described: dict[str, np.ndarray] = {}
    bar = tqdm(total=n_passes, desc="Describing versions", unit="img", disable=not progress)
    row = 0
    for _, make, flakes in jobs:
        for start in range(0, len(flakes), batch_size):
            chosen = flakes[start : start + batch_size]
            batch = pixels[chosen]
            if make is not None:
                batch = np.stack([make(image) for image in batch])
            maps = []
            for angle in pool_angles:
                if make is None and angle == 0 and original_features is not None:
                    values = np.asarray(original_features[chosen], dtype=np.float32)
                else:
                    turned = (
                        batch if angle == 0 else np.stack([rotate_pixels(p, angle) for p in batch])
                    )
                    values = feature_tools.run_model(extractor, turned)
                    bar.update(len(batch))
                maps.append(values.reshape(-1, *map_shape))
            rows = slice(row, row + len(chosen))
            for name, method in methods.items():
                values = np.asarray(method(maps), dtype=np.float32)
                if name not in described:
                    described[name] = np.empty((n_rows, values.shape[1]), dtype=np.float32)
                described[name][rows] = values
            row += len(chosen)
    bar.close()
    versions = pd.DataFrame(
        {
            "flake": np.concatenate([flakes for _, _, flakes in jobs]),
            "version": np.repeat([name for name, _, _ in jobs], [len(f) for _, _, f in jobs]),
        }
    )
    return Described(versions, described, n_passes, time.perf_counter() - started)


def _checked_sample(sample: Sequence[int] | None, n_flakes: int) -> np.ndarray:
    """``sample`` as an int64 array of distinct flake rows (every row when None)."""
    if sample is None:
        return np.arange(n_flakes)
    chosen = np.asarray(sample, dtype=np.int64).reshape(-1)
    if len(chosen) == 0 or len(np.unique(chosen)) != len(chosen):
        raise ValueError(f"the sample must list distinct flakes, at least one; got {chosen[:10]}")
    if chosen.min() < 0 or chosen.max() >= n_flakes:
        raise ValueError(f"the sample names flakes outside 0..{n_flakes - 1}")
    return chosen


# --- Self-retrieval ----------------------------------------------------------------------------


def self_retrieval(
    features: np.ndarray,
    versions: pd.DataFrame,
    flake_ids: Sequence[int] | None = None,
    chunk_rows: int = 1024,
) -> pd.DataFrame:
    """Does each variant find its own original? One row per variant (notebook 03, step 5).

    The database is every row of ``features``, originals and variants. A variant's search
    leaves out itself and the other versions of its own flake, so its only competitors are
    the other flakes, in every version there is of them.

    Args:
        features: float array ``(n_rows, n_values)``, rows as in ``versions``.
        versions: DataFrame with ``flake`` and ``version`` columns (:class:`Described`).
        flake_ids: optional, one number per flake: flakes with the same number are the same
            photo (exact duplicates in the folder, e.g. from ``search.exact_duplicate_groups``
            of the pixels), and finding any of their originals counts as finding the original.
        chunk_rows: variants searched per batched distance computation (bounds memory).

    Returns:
        Columns ``flake, variant, rank, hit, nearest_flake, distance_to_original,
        nearest_other_distance``: ``rank`` is 1 plus the number of other flakes' images
        strictly nearer to the variant than its original (1 = the original is the nearest
        neighbour), ``hit`` is ``rank == 1`` (recall@1), distances are squared L2.
    """
    features = search.check_features(features)
    if len(features) != len(versions):
        raise ValueError(f"got {len(features)} feature rows for {len(versions)} versions")
    flake = versions["flake"].to_numpy(dtype=np.int64)
    is_original = versions["version"].to_numpy() == ORIGINAL
    ids = flake if flake_ids is None else np.asarray(flake_ids, dtype=np.int64)[flake]
    missing = np.setdiff1d(flake[~is_original], flake[is_original])
    if len(missing):
        raise ValueError(f"variants of flakes {missing[:10].tolist()} have no original row")
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
            "variant": versions["version"].to_numpy()[queries],
            "rank": rank,
            "hit": hit,
            "nearest_flake": np.where(hit, flake[queries], flake[nearest_other]),
            "distance_to_original": to_original,
            "nearest_other_distance": np.where(np.isfinite(to_other), to_other, np.nan),
        }
    )


#: The row of :func:`summarise_retrieval` that pools every kind of variant.
ALL_VARIANTS = "all variants"


def summarise_retrieval(results: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Recall@1 and median rank of the original, per method and kind of variant.

    Args:
        results: method name -> :func:`self_retrieval` output.

    Returns:
        Columns ``method, variant, recall_at_1, median_rank, n_variants`` (``n_variants``: how
        many variants the row measures), with an ``"all variants"`` row per method; methods
        keep their order, variants the order they were made in.
    """
    columns = ["method", "variant", "recall_at_1", "median_rank", "n_variants"]
    rows = []
    for method, table in results.items():
        for variant, group in [*table.groupby("variant", sort=False), (ALL_VARIANTS, table)]:
            rows.append(
                {
                    "method": method,
                    "variant": variant,
                    "recall_at_1": float(group["hit"].mean()),
                    "median_rank": float(group["rank"].median()),
                    "n_variants": len(group),
                }
            )
    return pd.DataFrame(rows, columns=columns)


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
    versions: pd.DataFrame,
    files: Sequence[str],
    score: Callable[[np.ndarray], pd.DataFrame],
    top_n: int,
    draws: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Would the top flakes stay on top if the photos had been taken in other poses?

    Each draw gives every flake that has variants one of its versions at random (the
    original or any variant; a flake without variants keeps its original), ranks all the
    flakes with ``score`` and compares the result with the ranking of the originals.

    Args:
        features: ``(n_rows, n_values)``, rows as in ``versions`` (:class:`Described`): every
            flake has its original, and either every kind of variant or none.
        files: file name of each flake, by flake number.
        score: features ``(n_flakes, n_values)`` -> neighbours DataFrame, e.g.
            ``search.nearest_distinct_neighbours`` or ``lambda f: search.knn_uniqueness(f, 3)``.
        draws: how many random poses to try; ``seed`` fixes them.

    Returns:
        One row per draw: ``overlap`` (how many of the ``top_n`` stay in the top ``top_n``)
        and ``same_winner`` (whether the most unique flake stays the most unique).
    """
    kinds = list(dict.fromkeys(versions["version"]))
    n_flakes = len(files)
    row_of = np.full((len(kinds), n_flakes), -1, dtype=np.int64)
    kind_number = {kind: k for k, kind in enumerate(kinds)}
    row_of[versions["version"].map(kind_number).to_numpy(), versions["flake"].to_numpy()] = (
        np.arange(len(versions))
    )
    if ORIGINAL not in kind_number or (row_of[kind_number[ORIGINAL]] < 0).any():
        raise ValueError("every flake needs its original")
    n_versions = (row_of >= 0).sum(axis=0)
    if ((n_versions > 1) & (n_versions < len(kinds))).any():
        raise ValueError("a flake has some kinds of variant but not every kind")
    posed = np.flatnonzero(n_versions > 1)

    def top(rows: np.ndarray) -> list[str]:
        ranking = search.rank_uniqueness(score(features[rows]), list(files))
        return ranking["file"].head(top_n).tolist()

    reference = top(row_of[kind_number[ORIGINAL]])
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(draws):
        pick = np.full(n_flakes, kind_number[ORIGINAL])
        pick[posed] = rng.integers(0, len(kinds), len(posed))
        drawn = top(row_of[pick, np.arange(n_flakes)])
        results.append(
            {"overlap": len(set(drawn) & set(reference)), "same_winner": drawn[0] == reference[0]}
        )
    return pd.DataFrame(results, columns=["overlap", "same_winner"])
