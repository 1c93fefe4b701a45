"""Shared plumbing of the benchmarks: progress lines, timers taking turns, child processes, machine.

Benchmarks run from the repository root as ``python benchmarks/run.py``; importing this module
puts ``notebooks/`` on the import path, so ``snowflake_tools`` is the code under test.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter only

RESULT_PREFIX = "BENCH-RESULT "  # marks the line of a child's output that holds its result
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the ones the numbers depend on
_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Print a progress line with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _STARTED:5.0f} s] {message}", flush=True)


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int) -> dict[str, list]:
    """Wall times in seconds of each candidate, called in turns: A, B, C, then B, C, A, ...

    Taking turns spreads whatever else the machine does over every candidate alike; starting
    each round one candidate later spreads what a candidate leaves behind for the next one
    (freed memory to fault in again, idle threads to wake) over all of them too.
    """
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        start = round_number % len(names)
        for name in names[start:] + names[:start]:
            started = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - started)
    return times


def summary(seconds: list[float]) -> dict:
    """Median, fastest and slowest of some timings, in seconds."""
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds)}


def run_child(task: dict, unset: tuple[str, ...] = ()) -> dict:
    """Run ``worker.py`` on ``task`` in a fresh process, without the variables ``unset``.

    A fresh process is needed for settings read once at start-up and for peak memory. A child
    that fails returns ``{"error": ...}`` so that one failure does not sink the whole run.
    """
    env = {name: value for name, value in os.environ.items() if name not in unset}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "worker.py"), json.dumps(task)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line.removeprefix(RESULT_PREFIX))
    tail = (completed.stdout + completed.stderr).strip().splitlines()[-3:]
    return {"error": f"exit code {completed.returncode}: " + " | ".join(tail)}


def blas_libraries() -> list[dict]:
    """BLAS and OpenMP libraries loaded in this process, with kernel and threads (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    keys = {"library": "prefix", "api": "internal_api", "kernel": "architecture"}
    keys["threads"] = "num_threads"
    return [{key: info.get(name) or "" for key, name in keys.items()} for info in threadpool_info()]


def machine() -> dict:
    """CPU, its flags that matter, cores, memory, system and versions, for the report's heading."""
    import faiss
    import keras
    import numpy as np
    import tensorflow as tf

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line for line in lines if line.startswith("model name")).split(":", 1)[1]
        flags = set(next(line for line in lines if line.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu.strip(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "system": f"{platform.system()} {platform.release()}",
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "faiss_threads": faiss.omp_get_max_threads(),
        "versions": {"python": platform.python_version()}
        | {module.__name__: module.__version__ for module in (tf, keras, faiss, np)},
    }
