"""Run every benchmark, print the markdown tables and write them to ``--out`` (+ ``.json``).

python benchmarks/run.py --out results/bench.md     # the full run (make bench)
python benchmarks/run.py --quick --out /tmp/b.md    # tiny sizes: checks that it all runs
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import tempfile
from pathlib import Path

import common  # first: puts notebooks/ on the path, quiets TensorFlow's start-up
import extract_bench
import fidelity
import report
import search_bench

from snowflake_tools import files

#: Variables that can make numpy's OpenBLAS pick an older, slower kernel than the CPU has.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one run; the defaults are the full benchmark, about 10 minutes on 2 cores."""

    search_sizes: tuple[int, ...] = (1000, 2000)
    dimensions: int = 14 * 14 * 512  # block5_conv3 at 224 x 224, flattened
    max_queries: int = 1000  # the original loop runs on at most this many rows, then scales
    rounds: int = 3  # turns of every candidate, after a warm-up (not for the original loop)
    image_size: int = 224
    batch_sizes: tuple[int, ...] = (1, 8, 16, 32)
    matmul_size: int = 4096  # squares of this side, and (12 x this) x 512 by 512 x 512
    fidelity_images: int = 40  # per set, as in tests/test_precision.py; memory uses the demo set


QUICK = Plan(
    search_sizes=(search_bench.MIN_ROWS, 2 * search_bench.MIN_ROWS),
    dimensions=512,
    max_queries=search_bench.MIN_ROWS + 10,
    rounds=1,
    image_size=32,
    batch_sizes=(1, 4),
    matmul_size=256,
    fidelity_images=8,
)


def bench_fidelity(plan: Plan, folder: Path) -> dict:
    """The fidelity table's numbers for the demo set and the photo-like images."""
    sets = {
        "demo set": fidelity.demo_set(folder / "demo", plan.fidelity_images),
        "photo-like images": fidelity.photo_like_set(folder / "photos", plan.fidelity_images),
    }
    results = {}
    for name, paths in sets.items():
        common.log(f"fidelity: {name}, {len(paths)} images, float32 and bfloat16")
        results[name] = fidelity.compare_precisions(paths, plan.image_size)
    return results


def bench_memory(plan: Plan, folder: Path, batch_size: int) -> dict:
    """Peak memory of the original way and of streaming on the PNG files in ``folder``."""
    task = {"kind": "memory", "image_dir": str(folder), "image_size": plan.image_size}
    common.log("memory: the original way and streaming, each in a fresh process")
    ways = ("original", "streaming")
    return {way: common.run_child(task | {"way": way, "batch_size": batch_size}) for way in ways}


def run(plan: Plan) -> dict:
    """Every measurement of one run, as a JSON-ready dict."""
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "plan": dataclasses.asdict(plan),
        "machine": common.machine(),
        "blas": common.blas_libraries(),
    }
    common.log("matmul limit: a fresh process without " + " and ".join(OPENBLAS_OVERRIDES))
    task = {"kind": "matmul", "size": plan.matmul_size, "rounds": plan.rounds}
    results["matmul"] = common.run_child(task, unset=OPENBLAS_OVERRIDES)
    results["extraction"] = extract_bench.bench_extraction(
        plan.image_size, plan.batch_sizes, plan.rounds
    )
    with tempfile.TemporaryDirectory(prefix="snowflake-bench-") as folder:
        results["fidelity"] = bench_fidelity(plan, Path(folder))
        fastest = report.fastest_batches(results)[results["extraction"]["auto"]]
        results["memory"] = bench_memory(plan, Path(folder) / "demo", fastest)
    results["search"] = search_bench.bench_search(
        plan.search_sizes, plan.dimensions, plan.max_queries, plan.rounds
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, timings meaningless")
    args = parser.parse_args(argv)
    results = run(QUICK if args.quick else Plan())
    markdown = report.render(results, quick=args.quick)
    files.atomic_write_text(args.out, markdown)
    json_text = json.dumps(results, indent=2, default=float) + "\n"
    files.atomic_write_text(args.out.with_suffix(".json"), json_text)
    print(markdown)
    common.log(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
