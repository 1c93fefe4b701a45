"""Notebook 04 end to end with papermill and a local Ray: small folder, random weights."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import papermill
import pytest
from helpers import make_folder, precision_used, table_files

from snowflake_tools import features

pytestmark = pytest.mark.slow

NOTEBOOK = "04_a_million_snowflakes.ipynb"


def test_ranks_certifies_and_skips_known_files_on_a_rerun(run_notebook, tmp_path):
    image_dir = make_folder(tmp_path / "flakes")
    results = tmp_path / "results"
    parameters = dict(
        IMAGE_DIR=str(image_dir), RESULTS_DIR=str(results), WEIGHTS=None, IMAGE_SIZE=32,
        BATCH_SIZE=4, TOP_N=3, K_NEIGHBOURS=2,
    )  # fmt: skip
    run_notebook(NOTEBOOK, **parameters)
    scale = results / "scale"
    ranking = pd.read_csv(scale / "uniqueness.csv", keep_default_na=False)
    assert list(ranking.columns) == ["rank", "file", "nearest_file", "distance", "duplicates"]
    assert len(ranking) == 12 and "not_really.jpg" not in set(ranking["file"])
    assert ranking["distance"].is_monotonic_decreasing
    assert (ranking["file"] != ranking["nearest_file"]).all()
    copies = {"flake0.png", "copy_of_flake0.png", "another_copy.PNG"}
    assert not (ranking["file"].isin(copies) & ranking["nearest_file"].isin(copies)).any()
    assert (ranking.loc[ranking["file"].isin(copies), "duplicates"] == 2).all()
    for figure in ["most_unique.png", "certificate.png", "atlas.png"]:
        assert (scale / figure).stat().st_size > 0
    page = (scale / "report.html").read_text()
    # 12 flakes all fit ATLAS_FLAKES: the report's table holds each of them once
    assert sorted(table_files(page)) == sorted(ranking["file"]) and "DEMO" in page

    run = json.loads((scale / "run.json").read_text())
    assert run["certified"] is True and run["certificate_candidates"] >= 3
    assert run["precision"] == precision_used(run)
    assert run["n"] == 12 and run["n_distinct"] == 10 and run["n_skipped"] == 1
    assert run["feature_vector"] == "gap" and run["feature_dim"] == 512
    assert run["index"] == {"kind": "flat"} and run["recall_at_1"] == 1.0
    assert run["recall_sample"] == 10
    assert run["ray_address"] == "local" and run["ray_nodes"] == 1
    assert run["n_extracted"] == 11  # 13 files, two copies, one unreadable: 11 contents

    run_notebook(NOTEBOOK, **parameters)
    again = json.loads((scale / "run.json").read_text())
    assert again["n_extracted"] == 0 and again["n_known"] == 13
    rerun = pd.read_csv(scale / "uniqueness.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(rerun, ranking)

    # A damaged shard is named and extracted again; a run that then fails keeps the last results.
    results_before = {path: path.read_bytes() for path in scale.iterdir() if path.is_file()}
    shard = sorted((scale / "features").rglob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:100])  # cut short, as by a crash or a full disk
    for path in image_dir.iterdir():
        if path.name != "flake1.png":
            path.write_bytes(b"no longer an image")  # one readable flake: the ranking stops
    with pytest.raises(papermill.PapermillExecutionError, match="Only 1 readable image"):
        run_notebook(NOTEBOOK, **parameters)
    output = (tmp_path / "out.ipynb").read_text()
    assert f"The shard {shard} is damaged" in output and "extracted again" in output
    assert {path: path.read_bytes() for path in scale.iterdir() if path.is_file()} == results_before


def test_flattened_exact_ranking_equals_notebook_02(run_notebook, tmp_path):
    image_dir = make_folder(tmp_path / "flakes")
    # Both keep the precision "auto" chose (no close-call fallback), so they rank the same features
    common = dict(IMAGE_DIR=str(image_dir), WEIGHTS=None, IMAGE_SIZE=64, CLOSE_CALL_MARGIN=0)
    run_notebook("02_most_unique_snowflake.ipynb", RESULTS_DIR=str(tmp_path / "nb02"), **common)
    run_notebook(
        NOTEBOOK, RESULTS_DIR=str(tmp_path / "nb04"), FEATURE_VECTOR="flatten", INDEX="flat",
        K_NEIGHBOURS=1, **common,
    )  # fmt: skip
    expected = pd.read_csv(tmp_path / "nb02" / "uniqueness.csv", keep_default_na=False)
    ranking = pd.read_csv(tmp_path / "nb04" / "scale" / "uniqueness.csv", keep_default_na=False)
    for column in ["rank", "file", "nearest_file", "duplicates"]:
        assert ranking[column].tolist() == expected[column].tolist(), column
    np.testing.assert_allclose(ranking["distance"], expected["distance"], rtol=1e-4)


@pytest.mark.skipif(
    features.resolve_precision(features.AUTO) != features.BFLOAT16,
    reason='PRECISION "auto" is float32 on this CPU: nothing to fall back from',
)
def test_close_calls_send_auto_back_to_float32(run_notebook, tmp_path):
    """Every top pair a close call: "auto" extracts again in float32 and ranks as float32 does."""
    image_dir = make_folder(tmp_path / "flakes")
    common = dict(IMAGE_DIR=str(image_dir), WEIGHTS=None, IMAGE_SIZE=32, TOP_N=3)
    run_notebook(NOTEBOOK, RESULTS_DIR=str(tmp_path / "auto"), CLOSE_CALL_MARGIN=1e9, **common)
    run_notebook(NOTEBOOK, RESULTS_DIR=str(tmp_path / "f32"), PRECISION="float32", **common)
    run = json.loads((tmp_path / "auto" / "scale" / "run.json").read_text())
    assert run["close_calls"] >= 1 and run["precision"] == features.FLOAT32
    assert run["certified"] is True and run["n"] == 12
    # both precisions' shards, each in a folder of its own
    assert len(list((tmp_path / "auto" / "scale" / "features").iterdir())) == 2
    expected = pd.read_csv(tmp_path / "f32" / "scale" / "uniqueness.csv", keep_default_na=False)
    ranking = pd.read_csv(tmp_path / "auto" / "scale" / "uniqueness.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(ranking, expected)


def test_search_on_ray_ranks_as_in_process(run_notebook, tmp_path):
    image_dir = make_folder(tmp_path / "flakes")
    common = dict(
        IMAGE_DIR=str(image_dir),
        WEIGHTS=None,
        IMAGE_SIZE=32,
        BATCH_SIZE=4,
        TOP_N=10,
        PRECISION="float32",
    )  # fmt: skip  (TOP_N 10: every distinct flake certified exact)
    run_notebook(NOTEBOOK, RESULTS_DIR=str(tmp_path / "local"), SEARCH="local", **common)
    run_notebook(NOTEBOOK, RESULTS_DIR=str(tmp_path / "ray"), SEARCH="ray", **common)

    local, on_ray = (
        pd.read_csv(tmp_path / where / "scale" / "uniqueness.csv", keep_default_na=False)
        for where in ("local", "ray")
    )
    pd.testing.assert_frame_equal(on_ray, local, rtol=1e-5)
    run = json.loads((tmp_path / "ray" / "scale" / "run.json").read_text())
    assert run["search_path"] == "ray" and run["certified"] is True
    record = run["sharded"]
    assert (
        record["certified"] is True
        and record["certificate_candidates"] == run["certificate_candidates"]
        and record["n_distinct"] == 10
    )
    assert record["shards"] and all(path.endswith(".parquet") for path in record["shards"])
    assert set(record["nodes_by_phase"]) >= {"scan", "train", "assign", "search", "certify"}
    assert record["peak_task_memory_mib"] > 0
    assert json.loads((tmp_path / "local" / "scale" / "run.json").read_text())["sharded"] is None
