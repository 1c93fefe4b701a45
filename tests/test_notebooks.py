"""Every notebook is committed clean, keeps its tunable values in one parameters cell, and every
"notebook NN, step N" in the package names a heading that exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
PACKAGE_FILES = sorted((NOTEBOOK_DIR / "snowflake_tools").glob("*.py"))

#: "notebook 04" (one notebook: "notebooks 02 and 03" names no step of either).
MENTION = re.compile(r"\b[Nn]otebook (\d\d)\b")
#: "step 3", "steps 2 to 6", "steps 2-6", "sections 4 and 5" after a mention, in its sentence.
STEPS = re.compile(r"\b(?:steps?|sections?) (\d+)(?:\s*(?:-|–|to|and)\s*(\d+))?")
#: 'notebook 02, "The atlas"': a heading named by its title.
TITLE = re.compile(r'^(?:\'s)?,? "([^"]+)"')
#: The end of a sentence: a full stop before a space or the end.
SENTENCE_END = re.compile(r"\.(?:\s|$)")


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


def back_references(text: str) -> list[tuple[str, str]]:
    """``(notebook number, step number or quoted title)`` for each back-reference in ``text``."""
    text = " ".join(text.split())  # a docstring wraps a reference over lines
    found = []
    mentions = list(MENTION.finditer(text))
    for mention, following in zip(mentions, [*mentions[1:], None], strict=False):
        sentence_end = SENTENCE_END.search(text, mention.end())
        end = min(
            sentence_end.start() if sentence_end else len(text),
            following.start() if following else len(text),
        )
        span = text[mention.end() : end]
        title = TITLE.match(span)
        if title:
            found.append((mention.group(1), title.group(1)))
        for steps in STEPS.finditer(span):
            first, last = int(steps.group(1)), int(steps.group(2) or steps.group(1))
            found.extend((mention.group(1), str(step)) for step in range(first, last + 1))
    return found


def headings(number: str) -> list[str]:
    """The markdown headings of notebook ``number``, without their ``#`` marks."""
    (path,) = NOTEBOOK_DIR.glob(f"{number}_*.ipynb")
    cells = json.loads(path.read_text())["cells"]
    lines = ["".join(c["source"]).splitlines() for c in cells if c["cell_type"] == "markdown"]
    return [line.lstrip("#").strip() for cell in lines for line in cell if line.startswith("#")]


def missing_headings(text: str) -> list[str]:
    """The back-references in ``text`` whose notebook has no such step or heading."""
    missing = []
    for number, step in back_references(text):
        titles = headings(number)
        if step.isdigit():
            ok = any(re.match(rf"{step}[. ]", title) for title in titles)
        else:
            ok = any(title.startswith(step) for title in titles)
        if not ok:
            missing.append(f"notebook {number}, {'step ' if step.isdigit() else ''}{step}")
    return missing


def test_back_references_are_read_in_every_form():
    text = """Built as in notebook 02, step 2; see Notebook 04's steps 2 to 4, then
    notebook 05 step 5 and notebook 03, sections 6 and 7. Notebooks 02 and 03 share it
    (notebook 02, "The atlas"). Then step 9, without a notebook."""
    assert back_references(text) == [
        ("02", "2"), ("04", "2"), ("04", "3"), ("04", "4"), ("05", "5"), ("03", "6"),
        ("03", "7"), ("02", "The atlas"),
    ]  # fmt: skip
    assert missing_headings("the extraction (notebook 04, step 3)") == []
    assert missing_headings("the extraction (notebook 04, step 12)") == ["notebook 04, step 12"]
    assert missing_headings('see notebook 02, "The index"') == ["notebook 02, The index"]


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=lambda path: path.name)
def test_every_back_reference_in_the_package_names_a_heading_that_exists(path):
    assert missing_headings(path.read_text()) == []
