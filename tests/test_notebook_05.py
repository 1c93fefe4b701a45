"""Notebook 05 end to end with papermill, after notebook 02, on the demo crystals."""

from __future__ import annotations

import json
import shutil

import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest
from PIL import Image

from snowflake_tools import demo, runinfo, why

pytestmark = pytest.mark.slow

SIZE = 64  # VGG16 input: a 4×4 grid at block5_conv3
WIDE, TALL = "wide.png", "tall.png"


def add_odd_shapes(folder):
    """A landscape and a portrait crystal (their grids overhang the photo) and an exact copy."""
    Image.fromarray(demo.quick_crystal(7, (160, 60))).save(folder / WIDE)
    Image.fromarray(demo.quick_crystal(8, (50, 140))).save(folder / TALL)
    shutil.copy(folder / "demo-broken-01.png", folder / "copy-of-broken.png")
    return folder


@pytest.fixture
def run(run_notebook, tmp_path, demo_flakes):
    """Run notebook 02, then return a function that runs notebook 05 on its results."""
    flakes = add_odd_shapes(demo_flakes)
    common = dict(IMAGE_DIR=str(flakes), RESULTS_DIR=str(tmp_path / "results"), WEIGHTS=None)
    run_notebook("02_most_unique_snowflake.ipynb", IMAGE_SIZE=SIZE, **common)

    def run_05(**parameters):
        settings = dict(RESULTS_DIR=common["RESULTS_DIR"], TOP_N=2, K_NEIGHBOURS=2, SET_SIZE=4)
        run_notebook("05_why_is_it_unique.ipynb", **(settings | parameters))
        return tmp_path / "results"

    return run_05


def test_explains_the_top_flakes_and_picks_the_most_different_set(run):
    results = run()
    why_dir = results / "why"
    ranking = pd.read_csv(results / "uniqueness.csv", keep_default_na=False)
    cells = pd.read_csv(why_dir / "why_unique.csv")
    assert list(cells.columns) == why.CELL_COLUMNS
    explained = cells.drop_duplicates("file")[["rank", "file", "nearest_file"]]
    expected = ranking.head(2)[["rank", "file", "nearest_file"]]
    pd.testing.assert_frame_equal(explained.reset_index(drop=True), expected)
    for _, flake in cells.groupby("file"):
        assert len(flake) <= 16 and flake["difference_share"].sum() <= 1 + 1e-9
        assert (flake["difference_share"] >= 0).all() and (flake["novelty"] >= 0).all()
        assert (flake["bottom"] > flake["top"]).all() and (flake["right"] > flake["left"]).all()

    chosen = pd.read_csv(why_dir / "most_different.csv")
    assert list(chosen.columns) == why.SET_COLUMNS
    assert chosen["order"].tolist() == [1, 2, 3, 4]
    assert chosen["file"].iloc[0] == ranking["file"].iloc[0]
    assert np.isnan(chosen["distance_to_set"].iloc[0])
    assert chosen["distance_to_set"].iloc[1:].is_monotonic_decreasing
    assert not {"demo-broken-01.png", "copy-of-broken.png"} <= set(chosen["file"])

    record = json.loads((why_dir / "run.json").read_text())
    assert record["demo"] and record["grid"] == [4, 4, 512]
    assert record["set_size"] == 4 and record["k_neighbours"] == 2
    assert record["set_smallest_pairwise"] == pytest.approx(chosen["distance_to_set"].min())
    for figure in ("why_unique.png", "most_different.png"):
        assert Image.open(why_dir / figure).size[0] > 500
    page = (why_dir / "report.html").read_text()
    assert "DEMO run" in page and "data:image/png;base64," in page


def test_explains_named_files_with_cells_over_the_photo_only(run):
    results = run(EXPLAIN_FILES=[WIDE, TALL])
    cells = pd.read_csv(results / "why" / "why_unique.csv")
    assert cells.drop_duplicates("file")["file"].tolist() == [WIDE, TALL]
    wide, tall = cells[cells["file"] == WIDE], cells[cells["file"] == TALL]
    # 160×60 fills 64×24 of the square: only the middle two of four rows cover it.
    assert sorted(set(wide["cell_row"])) == [1, 2] and len(wide) == 8
    assert wide["bottom"].max() == 60 and wide["right"].max() == 160
    assert sorted(set(tall["cell_col"])) == [1, 2] and tall["bottom"].max() == 140


@pytest.mark.parametrize(
    "name, value", [("SET_SIZE", 1), ("K_NEIGHBOURS", 0), ("EXPLAIN_FILES", "a.png")]
)
def test_bad_parameters_stop_with_one_line_naming_them(run_notebook, tmp_path, name, value):
    settings = dict(RESULTS_DIR=str(tmp_path))
    with pytest.raises(pm.PapermillExecutionError) as error:
        run_notebook("05_why_is_it_unique.ipynb", **(settings | {name: value}))
    assert error.value.ename == "ParameterError"
    assert error.value.evalue.startswith(f"{name} = ") and "\n" not in error.value.evalue


@pytest.mark.parametrize(
    "record, says",
    [
        (None, "holds no run.json that says how 02_most_unique_snowflake.ipynb ranked"),
        ({"layer": "block5_conv3"}, "missing: image_dir, cache_dir, weights, image_size"),
        ({key: "x" for key in runinfo.RANKED_WITH} | {"layer": "block5_pool"}, "'block5_pool'"),
    ],
)
def test_results_without_notebook_02s_settings_stop_naming_results_dir(
    run_notebook, tmp_path, record, says
):
    if record is not None:
        (tmp_path / "run.json").write_text(json.dumps(record))
    with pytest.raises(pm.PapermillExecutionError) as error:
        run_notebook("05_why_is_it_unique.ipynb", RESULTS_DIR=str(tmp_path))
    assert error.value.ename == "ParameterError"
    assert error.value.evalue.startswith("RESULTS_DIR = ") and says in error.value.evalue
    assert not (tmp_path / "why").exists()


def printed(notebook) -> str:
    """What the cells of an executed notebook printed."""
    cells = nbformat.read(notebook, as_version=4).cells
    return "".join(out.get("text", "") for cell in cells for out in cell.get("outputs", []))


def test_images_changed_since_notebook_02_are_said(run, demo_flakes):
    results = run()
    assert "changed since notebook 02" not in printed(results.parent / "out.ipynb")
    ranking = pd.read_csv(results / "uniqueness.csv", keep_default_na=False)
    (demo_flakes / ranking["file"].iloc[0]).unlink()  # notebook 02's most unique flake
    run()
    assert "changed since notebook 02 ranked them" in printed(results.parent / "out.ipynb")


def test_a_set_larger_than_the_distinct_flakes_stops_naming_set_size(run):
    with pytest.raises(pm.PapermillExecutionError) as error:
        run(SET_SIZE=15)  # 15 images, one an exact copy: 14 distinct
    assert error.value.ename == "ParameterError"
    assert error.value.evalue.startswith("SET_SIZE = 15") and "at most 14" in error.value.evalue
