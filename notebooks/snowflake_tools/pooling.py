"""Compact features for many images: global average pooling, or the full map when it fits.

Notebook 04, step 2: a flattened ``block5_conv3`` map is 100,352 float32 values (392 KiB) per
image, so 24 GiB is full near 63,000 images. Averaging the map over its 14x14 positions keeps
512 values (2 KiB) — and notebook 03 showed it is also far more robust to turning the flake.
"""

from __future__ import annotations

import os

import numpy as np

#: Values of notebook 04's ``FEATURE_VECTOR`` parameter.
FEATURE_VECTORS = ("gap", "flatten")
#: Share of this machine's memory the feature matrix may take; the index and search need the
#: rest (an exact index holds one more copy of the rows).
MEMORY_SHARE = 0.25


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (all-zero rows stay zero): float32, same shape.

    For unit vectors the squared L2 distance is ``2 - 2 * cosine``, so searching unit rows by
    L2, as ``search.nearest_distinct_neighbours`` does, ranks them by cosine similarity
    (notebook 03's GAP and rotation-pooled methods, notebook 04's ``"gap"``).
    """
    features = np.asarray(features, dtype=np.float32)
    lengths = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(lengths > 0, lengths, 1.0).astype(np.float32)


def pool(outputs: np.ndarray, channels: int, feature_vector: str) -> np.ndarray:
    """Turn flattened feature maps ``(n, positions * channels)`` into feature rows.

    ``"gap"`` averages each of the ``channels`` over all positions and scales every row to
    length 1, so that squared L2 distance is ``2 - 2 * cosine`` and ranks like cosine;
    ``"flatten"`` returns the maps unchanged. Output is float32 ``(n, channels)`` or
    ``(n, positions * channels)``.
    """
    if feature_vector not in FEATURE_VECTORS:
        raise ValueError(
            f"FEATURE_VECTOR must be one of {', '.join(map(repr, FEATURE_VECTORS))}, "
            f"got {feature_vector!r}."
        )
    outputs = np.asarray(outputs, dtype=np.float32)
    if feature_vector == "flatten":
        return outputs
    return unit_rows(outputs.reshape(len(outputs), -1, channels).mean(axis=1, dtype=np.float64))


def feature_size(output_shape: tuple[int, ...], feature_vector: str) -> int:
    """Values per image for a layer output of shape ``(positions..., channels)``."""
    return int(output_shape[-1]) if feature_vector == "gap" else int(np.prod(output_shape))


def machine_memory_bytes() -> int:
    """Physical memory of this machine in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(n_images: int, n_values: int, memory_bytes: int | None = None) -> int:
    """Bytes the float32 feature matrix needs; ValueError when it would not fit comfortably.

    The limit is :data:`MEMORY_SHARE` of ``memory_bytes`` (default: this machine's memory).
    The message says how much is needed and what to do instead.
    """
    needed = n_images * n_values * 4
    memory_bytes = memory_bytes or machine_memory_bytes()
    if needed > MEMORY_SHARE * memory_bytes:
        raise ValueError(
            f"{n_images:,} images x {n_values:,} values need {needed / 2**30:.1f} GiB of float32 "
            f"features, more than {MEMORY_SHARE:.0%} of this machine's "
            f'{memory_bytes / 2**30:.1f} GiB. Use FEATURE_VECTOR = "gap" (512 values per image), '
            "or fewer images."
        )
    return needed
