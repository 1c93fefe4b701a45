"""Smoke test of `make bench-scale`: `scale_bench.py --quick` runs and writes a full report.

Only structure and correctness flags are checked, never a timing (shared, noisy machines).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import scale_bench  # noqa: E402


def test_same_top_accepts_a_tie_in_either_order_and_nothing_else():
    exact = np.array([0.9, 0.5, 0.5000001, 0.3, 0.1], dtype=np.float32)
    swapped_tie = np.array([0.9, 0.5000001, 0.5, 0.3, 0.1], dtype=np.float32)
    assert scale_bench.same_top(swapped_tie, exact, 3)
    exact_with_cut_tie = np.array([0.9, 0.5, 0.3, 0.3, 0.1], dtype=np.float32)
    other_of_the_tie = np.array([0.9, 0.5, 0.3, 0.3000001, 0.1], dtype=np.float32)
    assert scale_bench.same_top(other_of_the_tie, exact_with_cut_tie, 3)
    wrong_flake = np.array([0.9, 0.5, 0.2, 0.6, 0.1], dtype=np.float32)
    assert not scale_bench.same_top(wrong_flake, exact, 3)
    wrong_score = np.array([0.95, 0.5, 0.5000001, 0.3, 0.1], dtype=np.float32)
    assert not scale_bench.same_top(wrong_score, exact, 3)


@pytest.mark.slow
def test_quick_scale_bench_writes_markdown_and_json(tmp_path):
    out = tmp_path / "bench_scale.md"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale_bench.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    record = json.loads(out.with_suffix(".json").read_text())
    kinds = [row["index"]["kind"] for row in record["search"]]
    assert kinds == ["flat", "ivf", "hnsw"] * 2
    assert [row["brute_force_projected"] for row in record["search"]] == [False] * 3 + [True] * 3
    for row in record["search"]:
        assert row["top_equals_brute_force"] is True
        assert row["certificate_candidates"] >= 100 and 0.0 <= row["recall_at_1"] <= 1.0
        assert row["n_distinct"] < row["n"]  # the planted copies were merged
    extraction = record["extraction"]
    assert extraction["ray_two_nodes"]["every_node_worked"] is True
    assert extraction["ray_two_nodes"]["nodes"] == 2
    assert sum(extraction["ray_local"]["rows_per_node"]) == extraction["n_images"]
    for run in (extraction["ray_local"], extraction["ray_two_nodes"]):
        assert 0 < run["batch_seconds"] < run["seconds"]  # the batches are part of the run
    assert extraction["ray_local_fixed_seconds"] > 0
    sharded = {row["nodes"]: row for row in record["sharded"]}
    assert set(sharded) == {1, 2}
    for nodes, row in sharded.items():
        assert row["certified"] and row["same_top_as_in_process"], row
        assert row["nodes_by_phase"]["search"] == row["nodes_by_phase"]["certify"] == nodes, row
        assert row["recall_seconds"] == row["seconds"]["recall"] > 0, row  # timed apart
    markdown = out.read_text()
    assert "| 3,000 | ivf" in markdown and "Ray Data, two nodes" in markdown
