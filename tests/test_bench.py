"""Smoke test of the benchmark suite: `run.py --quick` runs and writes a well-formed report.

Only the structure is checked, never a timing: these machines are shared and noisy. The full
benchmark is `make bench`; it never runs inside `make test`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.md"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    return out.read_text(), json.loads(out.with_suffix(".json").read_text()), completed.stdout


def table_after(markdown: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table after the line starting with ``heading``."""
    lines = markdown[markdown.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    assert re.fullmatch(r"[-:| ]+", "|".join(rows[1])), "second line must be the separator"
    return [rows[0]] + rows[2:]


def number(cell: str) -> float:
    return float(re.sub(r"[^0-9.e+-]", "", cell.split()[0]))


def test_report_is_printed_and_has_every_section(quick_report):
    markdown, _, stdout = quick_report
    assert "QUICK RUN" in markdown
    for heading in ("## 1. Search", "## 2. Extraction", "## 3. Memory", "## 4. Growth"):
        assert heading in markdown
        assert heading in stdout  # printed as well as written


def test_search_table_has_positive_ratios_and_the_distance_check_passes(quick_report):
    markdown, results, _ = quick_report
    header, *rows = table_after(markdown, "## 1. Search")
    assert header[:4] == [
        "n",
        "original loop (s)",
        "`nearest_distinct_neighbours` (s)",
        "speed-up",
    ]
    assert len(rows) == len(results["plan"]["search_sizes"])
    for row in rows:
        assert row[3].endswith("x") and number(row[3]) > 0
        assert row[4].startswith("yes:"), row[4]
    for row in results["search"]:
        assert row["speedup"] > 0 and row["original_seconds"] > 0 and row["ours_seconds"] > 0
        assert row["rows_compared"] > 0 and row["rows_agreeing"] == row["rows_compared"]
        assert row["rows_excluded"] == 3  # the planted group of three, where the original fails
        assert all(variant["same_answer"] for variant in row["variants"].values())
    # the largest n is timed on a subset of queries and scaled up: the footnote says so
    assert "scaled to all n" in markdown


def test_extraction_tables_report_rates_against_the_matmul_limit(quick_report):
    markdown, results, _ = quick_report
    assert results["extraction"]["gflop_per_image"] > 0
    header, *rows = table_after(markdown, "Batch size, with")
    assert header == ["batch", "images/s", "GFLOP/s", "of the limit"]
    assert [int(row[0]) for row in rows] == list(results["plan"]["batch_sizes"])
    assert all(number(row[1]) > 0 and number(row[3]) > 0 for row in rows)
    _, *settings = table_after(markdown, "TensorFlow settings")
    names = [row[0] for row in settings]
    assert any("mixed_bfloat16" in name for name in names)
    fresh = [row for row in settings if row[1] == "fresh"]
    assert fresh and all(not row[-1].startswith("failed") for row in fresh)


def test_full_size_model_costs_what_the_issue_says():
    """The FLOP count the GFLOP/s column rests on: VGG16 to block5_conv3 at 224 x 224."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import extract_bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    model = extract_bench.build_extractor(224)
    assert extract_bench.conv_gflop_per_image(model) == pytest.approx(30.7, abs=0.05)


def test_memory_and_growth_tables_are_filled(quick_report):
    markdown, results, _ = quick_report
    _, *ways = table_after(markdown, "## 3. Memory")
    assert len(ways) == 2 and all(number(row[1]) > 0 for row in ways)
    for way in ("original", "streaming"):
        assert results["growth"]["memory"][way]["rows"] == results["plan"]["memory_images"]
    header, *rows = table_after(markdown, "## 4. Growth")
    assert header[0] == "n" and len(rows) >= len(results["plan"]["search_sizes"]) + 2
    assert results["fits"]["extraction_seconds_per_image"] > 0
