"""extract_features survives any single bad file, with the cache on and off (issue 8)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import write_hostile_folder

from snowflake_tools import features, images


@pytest.fixture(scope="module")
def tiny_extractor():
    """A small convolutional model with fixed random weights, standing in for cut VGG16."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    maps = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.MaxPooling2D(4)(maps), name="tiny")


@pytest.mark.parametrize("use_cache", [False, True])
def test_vanished_files_and_folders_are_skipped_and_listed(tiny_extractor, tmp_path, use_cache):
    readable, _ = write_hostile_folder(tmp_path / "flakes")
    good = [tmp_path / "flakes" / name for name in readable]
    (tmp_path / "folder.png").mkdir()
    paths = [tmp_path / "vanished.png", good[0], tmp_path / "folder.png", *good[1:]]
    cache_dir = tmp_path / "cache" if use_cache else None

    result = features.extract_features(tiny_extractor, paths, 4, cache_dir, progress=False)
    assert result.paths == good
    assert result.features.shape == (len(good), 8 * 8 * 4)
    assert sorted(result.skipped["file"]) == sorted(str(p) for p in paths if p not in good)
    assert all(result.skipped["reason"].str.len() > 0)
    assert result.n_cached == 0

    if use_cache:
        again = features.extract_features(tiny_extractor, paths, 4, cache_dir, progress=False)
        assert again.n_cached == len(good) and len(again.skipped) == 2
        np.testing.assert_array_equal(again.features, result.features)


def test_hostile_folder_extracts_exactly_the_decodable_images(tiny_extractor, tmp_path):
    readable, unreadable = write_hostile_folder(tmp_path)
    paths = images.list_images(tmp_path)
    result = features.extract_features(tiny_extractor, paths, 3, tmp_path / "cache", False)
    assert [path.name for path in result.paths] == readable
    assert sorted(result.skipped["file"]) == [str(tmp_path / name) for name in unreadable]
    bomb = result.skipped.set_index("file").loc[str(tmp_path / "bomb.png"), "reason"]
    assert "MAX_PIXELS" in bomb
    assert np.isfinite(result.features).all()
