"""The code and the notebooks pass ruff, so `make lint` stays green between releases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RUFF = Path(sys.executable).with_name("ruff")
TARGETS = [name for name in ("notebooks", "tests", "benchmarks") if (ROOT / name).is_dir()]


@pytest.mark.skipif(not RUFF.exists(), reason="ruff is installed by `make setup`")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=" ".join)
def test_ruff(command):
    result = subprocess.run(
        [str(RUFF), *command, *TARGETS], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
