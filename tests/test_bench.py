"""Smoke test of the benchmarks: `run.py --quick` runs and writes a well-formed report.

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
sys.path.insert(0, str(ROOT / "benchmarks"))
import extract_bench  # noqa: E402
import search_bench  # noqa: E402

SECTIONS = ("## Machine", "## 1. Search", "## 2. Matrix-multiply", "## 3. Extraction")
SECTIONS += ("## 4. Fidelity", "## 5. Memory")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.md"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    return out.read_text(), json.loads(out.with_suffix(".json").read_text()), completed.stdout


def table_after(markdown: str, heading: str, skip: int = 0) -> list[list[str]]:
    """Rows (cells stripped, separator dropped) of a table after the line starting ``heading``."""
    lines = markdown[markdown.index(heading) :].splitlines()
    tables, current = [], []
    for line in lines[1:]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
        if line.startswith("## "):
            break
    rows = (tables + [current])[skip]
    assert re.fullmatch(r"[-:| ]+", "|".join(rows[1])), "second line must be the separator"
    return [rows[0]] + rows[2:]


@pytest.mark.slow
def test_report_is_printed_and_has_every_section(quick_report):
    markdown, _, stdout = quick_report
    assert "QUICK RUN" in markdown
    for heading in SECTIONS:
        assert heading in markdown and heading in stdout


@pytest.mark.slow
def test_search_rows_agree_with_the_bare_search_and_mark_scaled_times(quick_report):
    markdown, results, _ = quick_report
    header, *rows = table_after(markdown, "## 1. Search")
    assert header[:4] == ["n", "original loop (s)", "`nearest_distinct_neighbours` (s)"] + [
        "bare `IndexFlatL2` add + search (s)"
    ]
    assert [int(row[0]) for row in rows] == list(results["plan"]["search_sizes"])
    assert all(row[-1] == "yes" for row in rows)
    assert not rows[0][1].endswith("*") and rows[1][1].endswith("*")  # only n > max_queries


@pytest.mark.slow
def test_matmul_limit_is_measured_in_both_precisions_in_a_child(quick_report):
    _, results, _ = quick_report
    matmul = results["matmul"]
    assert "error" not in matmul, matmul
    assert {rate["precision"] for rate in matmul["rates"].values()} == {"float32", "bfloat16"}
    assert all(rate["gflops"] > 0 for rate in matmul["rates"].values())
    assert any(info["api"] == "openblas" and info["kernel"] for info in matmul["blas"])


@pytest.mark.slow
def test_extraction_rows_cover_every_batch_size_with_rates_against_the_limit(quick_report):
    markdown, results, _ = quick_report
    _, *rows = table_after(markdown, "## 3. Extraction")
    precisions = {results["extraction"]["auto"], "float32"}
    assert len(rows) == len(precisions) * len(results["plan"]["batch_sizes"])
    assert all(float(row[-1]) > 0 for row in rows)
    _, *fastest = table_after(markdown, "## 3. Extraction", skip=1)
    assert {row[0].removesuffix(" (auto)") for row in fastest} == precisions
    assert sum(row[0].endswith("(auto)") for row in fastest) == 1


@pytest.mark.slow
def test_fidelity_and_memory_tables_are_filled(quick_report):
    markdown, results, _ = quick_report
    _, *sets = table_after(markdown, "## 4. Fidelity")
    assert [row[0] for row in sets] == ["demo set", "photo-like images"]
    assert all(0 < float(row[3]) <= 1 for row in sets)  # Spearman
    _, *auto_rows = table_after(markdown, "## 4. Fidelity", skip=1)
    assert [row[0] for row in auto_rows] == ["demo set", "photo-like images"]
    assert {row[2] for row in auto_rows} <= {"float32", "bfloat16"}
    for way in ("original", "streaming"):  # the demo set's PNG files, one of them a copy
        assert results["memory"][way]["images"] == results["plan"]["fidelity_images"] + 1


def test_full_size_model_costs_what_the_issue_says():
    """The FLOP count the GFLOP/s column rests on: VGG16 to block5_conv3 at 224 x 224."""
    model = extract_bench.build_extractor(224, "float32")
    assert extract_bench.conv_gflop_per_image(model) == pytest.approx(30.7, abs=0.05)


def test_original_loop_searches_again_after_each_copy():
    features = search_bench.make_features(search_bench.MIN_ROWS, 16)
    copies = sum(len(group) for group in search_bench.PLANTED_COPIES)
    calls = search_bench.original_loop(features, search_bench.MIN_ROWS)
    assert calls == search_bench.MIN_ROWS + copies
