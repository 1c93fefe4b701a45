"""README.md and docs/performance.md: a short front door, every measured number in one place."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PERFORMANCE = ROOT / "docs" / "performance.md"

#: A measured number as the README states it: a ratio, a duration or a memory size.
MEASURED = re.compile(r"\d[\d,]*(?:\.\d+)?(?:×| times| minutes| GiB)")


def test_readme_is_short_and_starts_with_the_quick_start():
    lines = README.splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines; numbers go to docs/performance.md"
    assert "## Quick start" in lines[:30] and "make run" in "\n".join(lines[:40])


def test_every_number_the_readme_measures_is_in_docs_performance():
    performance = " ".join(PERFORMANCE.read_text(encoding="utf-8").split())
    stated = MEASURED.findall(README)
    assert len(stated) >= 8, "the README's headline ratios were not found"
    missing = [number for number in stated if number not in performance]
    assert not missing, f"in README.md but not in docs/performance.md: {missing}"


def test_every_notebook_has_a_row_in_the_readme():
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"| `{notebook.name}` |" in README, notebook.name


def test_the_docs_tell_what_is_true_now_not_their_history():
    for text in (README, PERFORMANCE.read_text(encoding="utf-8")):
        for phrase in ("earlier version", "earlier run", "first said", "an earlier"):
            assert phrase not in text.lower(), phrase
