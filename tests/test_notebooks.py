"""Every notebook is committed clean and keeps its tunable values in one parameters cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_are_numbered_in_reading_order():
    numbers = [path.name[:3] for path in NOTEBOOKS]
    assert numbers and all(n[:2].isdigit() and n[2] == "_" for n in numbers)
    assert len(set(numbers)) == len(numbers)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_clean_with_one_parameters_cell(path):
    notebook = json.loads(path.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code)
    tagged = [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]
    assert len(tagged) == 1
    lines = [line for line in "".join(tagged[0]["source"]).splitlines() if line.strip()]
    assignments = [line for line in lines if not line.startswith("#")]
    assert assignments and all(line.split("=")[0].strip().isupper() for line in assignments)
    assert all("import" not in line for line in lines)
    assert notebook["cells"][0]["source"][0].startswith("# ")
