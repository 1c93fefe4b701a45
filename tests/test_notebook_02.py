"""Notebook 02 end to end with papermill: a small crafted folder, random weights, small images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import papermill as pm
import pytest
from helpers import ODD_NAMES, make_folder, precision_used, write_hostile_folder
from PIL import Image

from snowflake_tools import features, files, search

pytestmark = pytest.mark.slow

NOTEBOOK = "02_most_unique_snowflake.ipynb"


@pytest.fixture
def run(run_notebook, tmp_path):
    """Run notebook 02 on ``image_dir`` with random weights and 64-pixel images."""

    def run_on(image_dir, **parameters):
        results = tmp_path / "results"
        run_notebook(
            NOTEBOOK, IMAGE_DIR=str(image_dir), RESULTS_DIR=str(results), WEIGHTS=None,
            IMAGE_SIZE=64, **parameters,
        )  # fmt: skip
        return results

    return run_on


def test_ranks_flakes_skips_bad_files_and_reuses_the_cache(run, tmp_path):
    image_dir = make_folder(tmp_path / "flakes")
    results = run(image_dir)

    ranking = pd.read_csv(results / "uniqueness.csv", keep_default_na=False)
    assert list(ranking.columns) == ["rank", "file", "nearest_file", "distance", "duplicates"]
    assert len(ranking) == 12  # 13 files, one unreadable
    assert "not_really.jpg" not in set(ranking["file"])
    assert ranking["rank"].tolist() == list(range(1, 13))
    assert ranking["distance"].is_monotonic_decreasing
    assert (ranking["nearest_file"] != ranking["file"]).all()
    # Exact copies are never each other's neighbours, and know how many copies they have.
    sha = {name: files.sha256_file(image_dir / name) for name in ranking["file"]}
    assert all(
        sha[a] != sha[b] for a, b in zip(ranking["file"], ranking["nearest_file"], strict=True)
    )
    copies = ranking.set_index("file").loc[["flake0.png", "copy_of_flake0.png", "another_copy.PNG"]]
    assert copies["duplicates"].tolist() == [2, 2, 2]
    assert len(set(copies["nearest_file"])) == 1

    for figure in ("l2_boxplot.png", "most_unique.png"):
        assert Image.open(results / figure).size[0] > 300
    assert set(pd.read_csv(results / "near_duplicates.csv").columns) >= {"file", "nearest_file"}
    record = json.loads((results / "run.json").read_text())
    assert record["weights_mode"] == features.RANDOM and record["demo"]
    assert record["precision"] == precision_used(record)
    assert record["n_images"] == 12 and record["n_skipped"] == 1 and record["n_cached"] == 0
    assert record["feature_dim"] == 4 * 4 * 512  # 64 px in, 1/16 of it out
    assert record["peak_memory_mib"] > 0
    assert {"extract_seconds", "search_seconds"} <= set(record)

    again = run(image_dir)
    assert json.loads((again / "run.json").read_text())["n_cached"] == 12
    rerun = pd.read_csv(again / "uniqueness.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(rerun, ranking)


@pytest.mark.skipif(
    features.resolve_precision(features.AUTO) != features.BFLOAT16,
    reason='PRECISION "auto" is float32 on this CPU: nothing to fall back from',
)
def test_close_calls_send_auto_back_to_float32(run_notebook, tmp_path):
    """A margin so wide that every top pair is a close call: "auto" ends as float32 does."""
    image_dir = make_folder(tmp_path / "flakes")
    common = dict(IMAGE_DIR=str(image_dir), WEIGHTS=None, IMAGE_SIZE=64)
    run_notebook(NOTEBOOK, RESULTS_DIR=str(tmp_path / "auto"), CLOSE_CALL_MARGIN=1e9, **common)
    run_notebook(NOTEBOOK, RESULTS_DIR=str(tmp_path / "f32"), PRECISION="float32", **common)
    record = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert record["close_calls"] >= 1 and record["precision"] == features.FLOAT32
    expected = pd.read_csv(tmp_path / "f32" / "uniqueness.csv", keep_default_na=False)
    ranking = pd.read_csv(tmp_path / "auto" / "uniqueness.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(ranking, expected)


def test_file_names_with_maths_characters_run_through_and_are_kept_exactly(run, tmp_path):
    """Every figure shows these names (the first one in step 1, the top three later)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for name in ODD_NAMES:
        Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(folder / name)
    results = run(folder, TOP_N=len(ODD_NAMES))
    ranking = pd.read_csv(results / "uniqueness.csv", keep_default_na=False)
    assert sorted(ranking["file"]) == sorted(ODD_NAMES)
    assert set(ranking["nearest_file"]) <= set(ODD_NAMES)
    assert Image.open(results / "most_unique.png").size[0] > 300


def test_missing_image_folder_says_to_run_notebook_01(run, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="01_download_snowflakes.ipynb"):
        run(tmp_path / "nowhere")


def test_single_image_is_a_clear_error(run, tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (40, 40)).save(folder / "lonely.png")
    with pytest.raises(pm.PapermillExecutionError, match="at least 2"):
        run(folder)


def test_hostile_folder_ranks_exactly_the_decodable_images(run, tmp_path):
    readable, unreadable = write_hostile_folder(tmp_path / "flakes")  # "0_empty.jpg" sorts first
    results = run(tmp_path / "flakes")
    ranking = pd.read_csv(results / "uniqueness.csv", keep_default_na=False)
    assert sorted(ranking["file"]) == readable
    record = json.loads((results / "run.json").read_text())
    assert record["n_images"] == len(readable) and record["n_skipped"] == len(unreadable)

    again = run(tmp_path / "flakes")  # warm cache: same ranking, bad files skipped again
    record = json.loads((again / "run.json").read_text())
    assert record["n_cached"] == len(readable) and record["n_skipped"] == len(unreadable)
    pd.testing.assert_frame_equal(
        pd.read_csv(again / "uniqueness.csv", keep_default_na=False), ranking
    )


def test_folder_of_identical_copies_says_no_flake_has_a_distinct_neighbour(run, tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    Image.new("RGB", (40, 30), (20, 40, 90)).save(folder / "one.png")
    for name in ("two.png", "three.png"):
        shutil.copy(folder / "one.png", folder / name)
    results = run(folder)
    ranking = pd.read_csv(results / "uniqueness.csv", keep_default_na=False)
    assert sorted(ranking["file"]) == ["one.png", "three.png", "two.png"]
    assert (ranking["nearest_file"] == "").all() and (ranking["duplicates"] == 2).all()
    said = search.NO_DISTINCT_NEIGHBOUR.format(n=3).split("\n")[0]
    assert said in (tmp_path / "out.ipynb").read_text()
    assert Image.open(results / "most_unique.png").size[0] > 300
