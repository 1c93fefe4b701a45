"""Notebook 04's feature vectors: averaged over positions and scaled, or the full map if it fits."""

from __future__ import annotations

import numpy as np
import pytest

from snowflake_tools import pooling


def test_gap_pooling_averages_positions_and_normalises():
    maps = np.random.default_rng(1).random((3, 2, 2, 4)).astype(np.float32)
    pooled = pooling.pool(maps.reshape(3, -1), 4, "gap")
    expected = maps.mean(axis=(1, 2))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, expected, rtol=1e-6)
    np.testing.assert_array_equal(
        pooling.pool(maps.reshape(3, -1), 4, "flatten"), maps.reshape(3, -1)
    )
    assert pooling.feature_size((14, 14, 512), "gap") == 512
    assert pooling.feature_size((14, 14, 512), "flatten") == 100_352
    with pytest.raises(ValueError, match="FEATURE_VECTOR must be"):
        pooling.pool(maps.reshape(3, -1), 4, "max")


def test_flatten_refuses_sets_that_do_not_fit_and_says_how_much():
    assert pooling.check_fits(100, 100_352, memory_bytes=2**34) == 100 * 100_352 * 4
    with pytest.raises(ValueError, match=r"need 373\.8 GiB .*FEATURE_VECTOR = \"gap\""):
        pooling.check_fits(1_000_000, 100_352, memory_bytes=24 * 2**30)
