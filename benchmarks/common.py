"""Shared plumbing of the benchmarks: progress lines, timers, child processes, machine facts.

Every benchmark script runs from the repository root as ``python benchmarks/<script>.py``; this
module puts ``notebooks/`` on the import path so that ``snowflake_tools`` is the code under test.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
if str(ROOT / "notebooks") not in sys.path:
    sys.path.insert(0, str(ROOT / "notebooks"))

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) would bury the progress lines;
# this only silences logging and changes nothing that is measured.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Marks the one line of a child's output that carries its JSON result.
RESULT_PREFIX = "BENCH-RESULT "

_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Print a progress line with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _STARTED:6.0f} s] {message}", flush=True)


def elapsed() -> float:
    """Seconds since this process imported the benchmarks."""
    return time.perf_counter() - _STARTED


def seconds_of(function: Callable[[], object]) -> float:
    """Wall time of one call of ``function``, in seconds."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def best_seconds(function: Callable[[], object], calls: int, warm_up: int = 1) -> float:
    """Shortest wall time of ``calls`` calls after ``warm_up`` untimed ones, in seconds.

    On a shared machine other work only ever adds time, so the shortest call is the one least
    disturbed: the closest estimate of what the code itself costs.
    """
    for _ in range(warm_up):
        function()
    return min(seconds_of(function) for _ in range(calls))


def interleaved_times(
    candidates: dict[str, Callable[[], object]],
    rounds: int,
    warm_up: bool = True,
    calls_per_round: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Wall times of each call of each candidate, in seconds, over rounds taking turns.

    With ``warm_up``, each candidate is called once untimed first (tracing, allocation,
    caches). Taking turns spreads whatever else the machine is doing over all candidates
    alike, so their ratios hold even when the absolute times wander. ``calls_per_round`` lets
    short candidates take several calls per turn (default 1), so that each gets a fair number
    of chances at an undisturbed moment.
    """
    for function in candidates.values() if warm_up else ():
        function()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, function in candidates.items():
            for _ in range((calls_per_round or {}).get(name, 1)):
                times[name].append(seconds_of(function))
    return times


def interleaved_best(
    candidates: dict[str, Callable[[], object]],
    rounds: int,
    calls_per_round: dict[str, int] | None = None,
) -> dict[str, float]:
    """Shortest wall time of each candidate over rounds taking turns: the least disturbed one.

    Used where the question is how fast the machine *can* go (rates against a limit).
    """
    times = interleaved_times(candidates, rounds, calls_per_round=calls_per_round)
    return {name: min(values) for name, values in times.items()}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    On Linux this reads ``VmHWM`` (the high-water mark of this process's own memory) rather
    than ``getrusage``'s ``ru_maxrss``: a child started with fork and exec inherits its
    parent's ``ru_maxrss``, so a small child of a large parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes there, KiB here


def run_child(task: dict, env_changes: dict[str, str | None] | None = None) -> dict:
    """Run ``benchmarks/worker.py`` on ``task`` in a fresh process and return its result dict.

    A fresh process is needed whenever a setting is read once at start-up (environment
    variables, TensorFlow's thread pools) or when the process's own peak memory is the measure.
    ``env_changes`` maps variable names to new values; ``None`` removes the variable. A child
    that fails comes back as ``{"error": "<last lines of its output>"}`` instead of raising,
    so one setting that does not work on a machine never sinks the whole benchmark.
    """
    env = dict(os.environ)
    for name, value in (env_changes or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "worker.py"), json.dumps(task)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    output = (completed.stdout + completed.stderr).strip().splitlines()
    return {"error": f"exit code {completed.returncode}: " + " | ".join(output[-3:])}


def report_to_parent(result: dict) -> None:
    """Hand a child's result to :func:`run_child` (the parent reads this line)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def machine_facts() -> dict:
    """CPU model, cores, memory, vector units and Python version, for the report's heading."""
    cpu, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:  # not Linux: fall back on what the platform module knows
        pass
    cpu = cpu or platform.processor() or platform.machine()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    vector_units = [name for name in ("avx2", "avx512f", "amx_bf16") if name in flags]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "vector_units": vector_units,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }
