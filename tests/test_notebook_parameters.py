"""Every notebook checks its parameters before any work: a bad value stops it in one line.

Each notebook's check cell (the cell right after its parameters, id ``check-parameters``) is
run in-process after its parameters cell with a bad value of every parameter. A selection of
bad values also runs the whole notebook with papermill: it must fail in that cell, before a
folder is written, a model built or Ray started, with a one-line ``ParameterError`` naming
the parameter. Then two runs with a ``TOP_N`` above the number of flakes: clamped with a
note, and no figure or certificate speaks of ranks that do not exist.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

import snowflake_tools
from snowflake_tools.parameters import ParameterError

#: The modules the parameters and check cells use (the notebooks import them in Setup).
CHECK_CELL_MODULES = (
    "ann", "demo", "features", "fidelity", "parameters", "pooling", "runinfo", "search",
    "sharded_search",
)  # fmt: skip
for _module in CHECK_CELL_MODULES:
    importlib.import_module(f"snowflake_tools.{_module}")

NOTEBOOK_DIR = Path(__file__).parents[1] / "notebooks"
NB01 = "01_download_snowflakes.ipynb"
NB02 = "02_most_unique_snowflake.ipynb"
NB03 = "03_how_robust_is_uniqueness.ipynb"
NB04 = "04_a_million_snowflakes.ipynb"
NB05 = "05_why_is_it_unique.ipynb"

#: Distinct flakes in the folder ``flakes`` makes (plus one exact copy).
N_DISTINCT = 6

#: (notebook, parameter, bad value): every parameter of every notebook. IMAGE_DIR and
#: RESULTS_DIR are set by the test unless the case sets them; "<missing>" and "<a file>" stand
#: for such paths under tmp_path.
BAD_VALUES = [
    (NB01, "SOURCE", "ftp"),
    (NB01, "BASE_URL", "gallery.example/images.html"),
    (NB01, "IMAGE_DIR", "<a file>"),
    (NB01, "MIN_SIDE", 0),
    (NB01, "REQUEST_DELAY_S", -1),
    (NB01, "MAX_IMAGES", 0),
    (NB01, "DEMO_COUNT", 0),
    (NB01, "DEMO_SEED", -1),
    (NB01, "MONTAGE_SIZE", 0),
    (NB02, "IMAGE_DIR", "<missing>"),
    (NB02, "RESULTS_DIR", "<a file>"),
    (NB02, "CACHE_DIR", "<a file>"),
    (NB02, "WEIGHTS", "imagnet"),
    (NB02, "LAYER", "fc1"),
    (NB02, "IMAGE_SIZE", 10),
    (NB02, "PRECISION", "half"),
    (NB02, "CLOSE_CALL_MARGIN", -1),
    (NB02, "BATCH_SIZE", 0),
    (NB02, "TOP_N", 0),
    (NB02, "TOP_N", -1),
    (NB02, "NEAR_DUPLICATE_RATIO", "small"),
    (NB03, "IMAGE_DIR", "<missing>"),
    (NB03, "RESULTS_DIR", "<a file>"),
    (NB03, "CACHE_DIR", "<a file>"),
    (NB03, "WEIGHTS", "imagnet"),
    (NB03, "IMAGE_SIZE", 10),
    (NB03, "PRECISION", "half"),
    (NB03, "CLOSE_CALL_MARGIN", -1),
    (NB03, "BATCH_SIZE", 0),
    (NB03, "ANGLES", [30, 360]),
    (NB03, "MIRROR", "yes"),
    (NB03, "JPEG_QUALITY", 101),
    (NB03, "POOL_ANGLES", [20, 40]),
    (NB03, "POOLING", "median"),
    (NB03, "K_NEIGHBOURS", 0),
    (NB03, "TOP_N", 0),
    (NB03, "POSE_DRAWS", 0),
    (NB03, "SAMPLE_SIZE", 0),
    (NB03, "SEED", -1),
    (NB04, "IMAGE_DIR", "<missing>"),
    (NB04, "RESULTS_DIR", "<a file>"),
    (NB04, "RAY_ADDRESS", "local"),
    (NB04, "WEIGHTS", "imagnet"),
    (NB04, "LAYER", "fc1"),
    (NB04, "IMAGE_SIZE", 10),
    (NB04, "BATCH_SIZE", 0),
    (NB04, "PRECISION", "half"),
    (NB04, "CLOSE_CALL_MARGIN", -1),
    (NB04, "FEATURE_VECTOR", "max"),
    (NB04, "INDEX", "bogus"),
    (NB04, "TOP_N", 0),
    (NB04, "TOP_N", -1),
    (NB04, "K_NEIGHBOURS", 0),
    (NB04, "RECALL_SAMPLE", 0),
    (NB04, "ATLAS_FLAKES", 0),
    (NB04, "CERTIFICATE_DEMO_ROWS", 1),
    (NB04, "SEARCH", "cluster"),
    (NB05, "RESULTS_DIR", "<missing>"),
    (NB05, "RESULTS_DIR", "<a file>"),
    (NB05, "BATCH_SIZE", 0),
    (NB05, "TOP_N", 0),
    (NB05, "EXPLAIN_FILES", "a.png"),
    (NB05, "K_NEIGHBOURS", 0),
    (NB05, "SET_SIZE", 1),
]

#: The cases run end to end with papermill (each takes a kernel and the imports): the issue's
#: examples and at least one bad value of each kind of check in every notebook.
RUN_END_TO_END = [
    (NB01, "SOURCE", "ftp"),
    (NB01, "BASE_URL", "gallery.example/images.html"),
    (NB01, "IMAGE_DIR", "<a file>"),
    (NB01, "MAX_IMAGES", 0),
    (NB02, "TOP_N", 0),
    (NB02, "TOP_N", -1),
    (NB02, "BATCH_SIZE", 0),
    (NB02, "CACHE_DIR", "<a file>"),
    (NB02, "WEIGHTS", "imagnet"),
    (NB03, "POOLING", "median"),
    (NB03, "ANGLES", [30, 360]),
    (NB03, "MIRROR", "yes"),
    (NB03, "JPEG_QUALITY", 101),
    (NB04, "FEATURE_VECTOR", "max"),
    (NB04, "INDEX", "bogus"),
    (NB04, "BATCH_SIZE", 0),
    (NB04, "IMAGE_SIZE", 10),
    (NB04, "LAYER", "fc1"),
    (NB04, "PRECISION", "half"),
    (NB04, "IMAGE_DIR", "<missing>"),
    (NB04, "K_NEIGHBOURS", 0),
    (NB04, "TOP_N", -1),
    (NB04, "RAY_ADDRESS", "local"),
    (NB04, "CLOSE_CALL_MARGIN", -1),
    (NB05, "SET_SIZE", 1),
    (NB05, "RESULTS_DIR", "<missing>"),
]


def case_id(case) -> str:
    notebook, name, value = case
    return f"{notebook[:2]}-{name}={value}"


def bad_value(value, tmp_path):
    """``value``, with "<missing>" and "<a file>" turned into such paths under ``tmp_path``."""
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    if isinstance(value, str):
        value = {"<missing>": str(tmp_path / "missing"), "<a file>": str(a_file)}.get(value, value)
    return value


def good_parameters(notebook, flakes, tmp_path) -> dict:
    """Parameters that pass the checks and write under ``tmp_path`` only."""
    if notebook == NB01:  # it writes IMAGE_DIR; the others write RESULTS_DIR
        return {"IMAGE_DIR": str(tmp_path / "downloads"), "REQUEST_DELAY_S": 0}
    if notebook == NB05:  # it explains notebook 02's ranking, as its run.json describes it
        results = tmp_path / "results"
        results.mkdir(exist_ok=True)
        ranked_with = {"image_dir": str(flakes), "cache_dir": str(results / "feature_cache"),
                       "weights": None, "layer": "block5_conv3", "image_size": 32,
                       "precision": "float32", "near_duplicate_ratio": 0.05}  # fmt: skip
        (results / "run.json").write_text(json.dumps(ranked_with))
        return {"RESULTS_DIR": str(results)}
    parameters = {"IMAGE_DIR": str(flakes), "RESULTS_DIR": str(tmp_path / "results")}
    parameters |= {"WEIGHTS": None, "IMAGE_SIZE": 32}
    if notebook == NB03:
        parameters["CACHE_DIR"] = str(tmp_path / "cache")
    return parameters


def cell_source(notebook: str, test) -> str:
    cells = nbformat.read(NOTEBOOK_DIR / notebook, as_version=4).cells
    return next(cell.source for cell in cells if test(cell))


def run_check_cell(notebook: str, **parameters) -> None:
    """The notebook's parameters cell, then ``parameters``, then its check cell, in-process."""
    namespace = {name: getattr(snowflake_tools, name) for name in CHECK_CELL_MODULES}
    exec(
        cell_source(notebook, lambda cell: "parameters" in cell.metadata.get("tags", [])), namespace
    )
    namespace.update(parameters)
    exec(cell_source(notebook, lambda cell: cell.get("id") == "check-parameters"), namespace)


@pytest.fixture
def flakes(tmp_path, make_image):
    """A folder of ``N_DISTINCT`` synthetic flakes and one exact copy of the first."""
    folder = tmp_path / "flakes"
    folder.mkdir()
    for seed in range(N_DISTINCT):
        (folder / f"flake{seed}.jpg").write_bytes(make_image(seed))
    shutil.copy(folder / "flake0.jpg", folder / "copy_of_flake0.jpg")
    return folder


def failing_cell_id(output) -> str:
    """The id of the cell whose error stopped the run written to ``output``."""
    notebook = nbformat.read(output, as_version=4)
    failed = [
        cell.id
        for cell in notebook.cells
        if any(out.get("output_type") == "error" for out in cell.get("outputs", []))
    ]
    assert len(failed) == 1, failed
    return failed[0]


@pytest.mark.parametrize(("notebook", "name", "value"), BAD_VALUES, ids=map(case_id, BAD_VALUES))
def test_the_check_cell_refuses_a_bad_value_of_every_parameter(
    notebook, name, value, flakes, tmp_path
):
    value = bad_value(value, tmp_path)
    parameters = good_parameters(notebook, flakes, tmp_path) | {name: value}
    with pytest.raises(ParameterError) as raised:
        run_check_cell(notebook, **parameters)
    assert str(raised.value).startswith(f"{name} = {value!r} is not allowed: ")


@pytest.mark.parametrize("notebook", [NB01, NB02, NB03, NB04, NB05])
def test_the_check_cell_passes_the_defaults(notebook, flakes, tmp_path, capsys):
    run_check_cell(notebook, **good_parameters(notebook, flakes, tmp_path))
    assert capsys.readouterr().out == "Every parameter is allowed.\n"


def test_notebook_03_refuses_a_run_without_copies(flakes, tmp_path):
    parameters = good_parameters(NB03, flakes, tmp_path)
    with pytest.raises(ParameterError, match="make no variants to test"):
        run_check_cell(NB03, **parameters, ANGLES=(), MIRROR=False, JPEG_QUALITY=None)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("notebook", "name", "value"), RUN_END_TO_END, ids=map(case_id, RUN_END_TO_END)
)
def test_a_bad_value_stops_the_notebook_before_any_work(
    notebook, name, value, run_notebook, flakes, tmp_path
):
    value = bad_value(value, tmp_path)
    parameters = good_parameters(notebook, flakes, tmp_path) | {name: value}
    made = set(tmp_path.rglob("*"))
    with pytest.raises(pm.PapermillExecutionError) as raised:
        run_notebook(notebook, **parameters)
    error = raised.value
    assert error.ename == "ParameterError"
    assert error.evalue.startswith(f"{name} = {value!r} is not allowed: ")
    assert failing_cell_id(tmp_path / "out.ipynb") == "check-parameters"
    # IPython showed the one line, not a traceback through the package
    assert [line for line in error.traceback if line.strip()] == [f"ParameterError: {error.evalue}"]
    # nothing written: only what the test made is there
    assert set(tmp_path.rglob("*")) == made | {tmp_path / "out.ipynb"}


@pytest.mark.slow
def test_notebook_02_clamps_a_top_n_above_the_flakes_and_says_so(run_notebook, flakes, tmp_path):
    results = tmp_path / "results"
    output = run_notebook(
        NB02, IMAGE_DIR=str(flakes), RESULTS_DIR=str(results), WEIGHTS=None, IMAGE_SIZE=32,
        TOP_N=1000,
    )  # fmt: skip
    note = f"TOP_N = 1000 but only {N_DISTINCT} distinct flakes: showing all {N_DISTINCT}"
    assert note in output
    assert "exact copies of one picture" not in output  # only true when it is
    ranking = pd.read_csv(results / "uniqueness.csv", keep_default_na=False)
    assert len(ranking) == N_DISTINCT + 1
    assert f"The {N_DISTINCT} most unique flakes" in (results / "report.html").read_text()


@pytest.mark.slow
def test_notebook_04_certifies_only_the_ranks_there_are(run_notebook, flakes, tmp_path):
    results = tmp_path / "results"
    output = run_notebook(
        NB04, IMAGE_DIR=str(flakes), RESULTS_DIR=str(results), WEIGHTS=None, IMAGE_SIZE=32,
        BATCH_SIZE=4, TOP_N=1000,
    )  # fmt: skip
    note = f"TOP_N = 1000 but only {N_DISTINCT} distinct flakes: showing all {N_DISTINCT}"
    assert note in output
    assert "rank 1000" not in output and f"rank {N_DISTINCT} " in output
    run = json.loads((results / "scale" / "run.json").read_text())
    assert run["top_n"] == N_DISTINCT and run["n_distinct"] == N_DISTINCT
    assert run["certified"] is True
