"""The opening steps shared by notebooks 02 and 03."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from snowflake_tools import features, prologue


def test_prepare_folders_creates_the_results_folder_and_defaults_the_cache(tmp_path):
    image_dir, results_dir, cache_dir = prologue.prepare_folders(
        str(tmp_path / "images"), str(tmp_path / "out" / "results")
    )
    assert image_dir == tmp_path / "images" and not image_dir.exists()
    assert results_dir.is_dir() and cache_dir == results_dir / prologue.CACHE_SUBFOLDER
    assert prologue.prepare_folders(image_dir, results_dir, tmp_path / "c")[2] == tmp_path / "c"


def extraction_of(paths, n_skipped):
    return features.Extraction(
        features=np.zeros((len(paths), 3), dtype=np.float32),
        paths=list(paths),
        skipped=pd.DataFrame({"file": ["bad"] * n_skipped, "reason": ["broken"] * n_skipped}),
        n_cached=0,
        seconds=0.0,
    )


def test_readable_flakes_are_named_relative_to_the_image_folder(tmp_path):
    paths = [tmp_path / "b.png", tmp_path / "sub" / "a.png"]
    assert prologue.readable_flakes(extraction_of(paths, 1), tmp_path) == ["b.png", "sub/a.png"]


@pytest.mark.parametrize("n_readable", [0, 1])
def test_fewer_than_two_readable_images_is_a_clear_error(tmp_path, n_readable):
    extraction = extraction_of([tmp_path / "a.png"][:n_readable], 3)
    message = f"Only {n_readable} readable image.*3 could not be read.*at least 2"
    with pytest.raises(ValueError, match=message):
        prologue.readable_flakes(extraction, tmp_path)


def test_load_extractor_cuts_vgg16_and_says_it_is_a_demo(tmp_path, capsys):
    extractor, weights_mode, demo = prologue.load_extractor(None, 32, "block4_conv3", tmp_path)
    assert tuple(extractor.output.shape[1:]) == (4, 4, 512)
    assert weights_mode == features.RANDOM and "random" in demo
    assert "DEMO run" in capsys.readouterr().out


@pytest.mark.parametrize("precision", [features.FLOAT32, features.BFLOAT16])
def test_load_extractor_builds_the_precision_asked_for(tmp_path, precision, capsys):
    extractor, _, _ = prologue.load_extractor(None, 32, "block5_conv3", tmp_path, precision)
    assert features.precision_of(extractor) == precision
    assert f"precision: {precision}" in capsys.readouterr().out
