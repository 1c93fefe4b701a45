"""run.json and the demo label."""

from __future__ import annotations

import json

from snowflake_tools import features, files, runinfo


def test_peak_memory_is_plausible():
    assert 10 < runinfo.peak_memory_mib() < 24 * 1024


def test_demo_reason_names_each_cause(tmp_path):
    assert runinfo.demo_reason("imagenet", tmp_path) == ""
    assert runinfo.demo_reason(features.RANDOM, tmp_path) == "random VGG16 weights"
    row = dict(file="a.png", url="demo:plate/1", page="demo:", sha256="0", width=1, height=1)
    files.write_manifest(tmp_path, [row])
    assert runinfo.demo_reason("imagenet", tmp_path) == "synthetic demo crystals"
    assert runinfo.demo_reason(None, tmp_path) == "synthetic demo crystals"
    assert runinfo.demo_reason(features.RANDOM, tmp_path) == (
        "random VGG16 weights and synthetic demo crystals"
    )


def test_write_run_json_round_trips(tmp_path):
    path = runinfo.write_run_json(tmp_path / "run.json", {"n_images": 3, "where": tmp_path})
    assert json.loads(path.read_text())["n_images"] == 3
