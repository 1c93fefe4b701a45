"""Run every benchmark, print the markdown tables and write them to ``--out``.

    python benchmarks/run.py --out results/bench.md     # the full run (make bench), ~10 min
    python benchmarks/run.py --quick --out /tmp/b.md    # tiny sizes, a smoke test, no timings

Side-by-side comparisons (the original search loop against the project's search, extraction
against the matrix-multiply rate) are measured in this one process; settings that need a fresh
process, and peak memory, are measured in child processes (``worker.py``). The raw numbers go
to a JSON file beside the markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import common  # first: puts notebooks/ on the path and quiets TensorFlow's start-up logging
import extract_bench
import faiss
import keras
import memory_bench
import numpy as np
import report
import search_bench
import tensorflow as tf

from snowflake_tools import features, files, images

#: Environment variables that make a current numpy pick an older, slower OpenBLAS kernel.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one run; the defaults are the full benchmark (see :data:`QUICK`)."""

    search_sizes: tuple[int, ...] = (250, 500, 1000, 2000)
    dimensions: int = 14 * 14 * 512  # block5_conv3 at 224 x 224, flattened
    max_queries: int = 500  # the original loop is timed on at most this many queries
    image_size: int = 224
    batch_sizes: tuple[int, ...] = (1, 4, 16, 32)
    settings_batch: int = 16  # features.extract_features' default batch size
    matmul_size: int = 4096
    rounds: int = 4  # turns of each extraction or matmul candidate, taking turns
    fresh_rounds: int = 2  # the same in each fresh process
    memory_images: int = 96
    png_side: int = 320
    growth_images: tuple[int, ...] = (16, 48)
    fresh_settings: tuple[str, ...] = (
        "default (fresh process)",
        "TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels)",
        "1 intra-op thread",
        "ONEDNN_DEFAULT_FPMATH_MODE=BF16 (not float32)",
    )


#: Tiny sizes for the smoke test: every code path, a few seconds of work, meaningless timings.
QUICK = Plan(
    search_sizes=(search_bench.MIN_ROWS, 2 * search_bench.MIN_ROWS),
    dimensions=512,
    max_queries=search_bench.MIN_ROWS + 10,
    image_size=32,
    batch_sizes=(1, 4),
    settings_batch=4,
    matmul_size=256,
    rounds=1,
    fresh_rounds=1,
    memory_images=8,
    png_side=48,
    growth_images=(4, 8),
    fresh_settings=("TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels)",),
)

#: The fresh process with no setting changed: a control, and one more float32 matmul sample.
DEFAULT_FRESH = "default (fresh process)"

#: Settings that need a fresh process: label -> (environment changes, task options).
FRESH_SETTINGS: dict[str, tuple[dict, dict]] = {
    DEFAULT_FRESH: ({}, {}),
    "TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels)": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "1 intra-op thread": ({}, {"intra_op_threads": 1}),
    "ONEDNN_DEFAULT_FPMATH_MODE=BF16 (not float32)": ({"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}, {}),
}


def versions() -> dict:
    """Versions of what the numbers depend on."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "numpy_blas_kernel": extract_bench.numpy_blas_kernel(),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "openblas_overrides": {
            name: os.environ[name] for name in OPENBLAS_OVERRIDES if name in os.environ
        },
    }


def measure_extraction(plan: Plan, model: keras.Model) -> dict:
    """Matmul rates, batch sizes and in-process variants, side by side in this process."""
    common.log(
        f"extraction and matmul ({plan.matmul_size} x {plan.matmul_size}) side by side: "
        f"batch sizes {', '.join(map(str, plan.batch_sizes))}, then the variants"
    )
    measured = extract_bench.side_by_side(
        model,
        plan.image_size,
        list(plan.batch_sizes),
        plan.settings_batch,
        plan.matmul_size,
        plan.rounds,
    )
    if any(name in os.environ for name in OPENBLAS_OVERRIDES):
        common.log(f"matmul: numpy in a child process without {' and '.join(OPENBLAS_OVERRIDES)}")
        child = common.run_child(
            {"kind": "numpy_matmul", "size": plan.matmul_size, "calls": plan.rounds},
            dict.fromkeys(OPENBLAS_OVERRIDES),
        )
        measured["matmul"]["numpy_float32_unset"] = child.get("gflops")
        measured["matmul"]["numpy_unset_kernel"] = child.get("kernel", child.get("error"))
    measured["gflop_per_image"] = extract_bench.conv_gflop_per_image(model)
    return measured


def measure_fresh_settings(plan: Plan) -> list[dict]:
    """Extraction under settings read at start-up, one fresh process each."""
    rows = []
    for label in plan.fresh_settings:
        common.log(f"extraction in a fresh process: {label}")
        env_changes, options = FRESH_SETTINGS[label]
        task = {
            "kind": "extract",
            "image_size": plan.image_size,
            "batch_size": plan.settings_batch,
            "matmul_size": plan.matmul_size,
            "rounds": plan.fresh_rounds,
            **options,
        }
        rows.append({"setting": label, **common.run_child(task, env_changes)})
    return rows


def measure_memory_and_growth(plan: Plan, model: keras.Model) -> dict:
    """Peak memory of both ways (fresh processes), then extraction time against n from files."""
    with tempfile.TemporaryDirectory(prefix="snowflake-bench-") as folder:
        count = max(plan.memory_images, max(plan.growth_images))
        common.log(f"memory: writing {count} PNG files of {plan.png_side} x {plan.png_side}")
        paths = memory_bench.write_flake_pngs(Path(folder), count, plan.png_side)
        memory = {}
        for way in ("original", "streaming"):
            common.log(f"memory: {way} way, {plan.memory_images} images, in a fresh process")
            memory[way] = common.run_child(
                {
                    "kind": "memory",
                    "way": way,
                    "image_dir": folder,
                    "images": plan.memory_images,
                    "image_size": plan.image_size,
                    "batch_size": plan.settings_batch,
                }
            )
        common.log(f"growth: decoding {len(paths)} image files alone")
        decode_seconds = common.seconds_of(
            lambda: [images.load_image(path, plan.image_size) for path in paths]
        )
        growth = {}
        for n in plan.growth_images:
            common.log(f"growth: features.extract_features on {n} image files")
            result = features.extract_features(
                model, paths[:n], batch_size=plan.settings_batch, progress=False
            )
            growth[str(n)] = result.seconds
    return {
        "memory": memory,
        "extraction_seconds": growth,
        "decode_seconds_per_image": decode_seconds / len(paths),
    }


def fit_growth(results: dict) -> dict:
    """Extraction = e * n, exact search = a * n^2, and the n where the two cross.

    ``e`` is fitted (least squares through 0) to the timed extraction of image files, in this
    process and in the streaming child. ``a`` is the search time at the largest n measured
    divided by n^2: all of that cost is counted as quadratic, and a bigger matrix product
    only runs as fast or faster, so projections err on the slow side for search and the
    crossover n = e / a errs low.
    """
    points = [(int(n), seconds) for n, seconds in results["growth"]["extraction_seconds"].items()]
    streaming = results["growth"]["memory"].get("streaming", {})
    if "seconds" in streaming:
        points.append((streaming["rows"], streaming["seconds"]))
    counts, seconds = np.array(points, dtype=np.float64).T
    per_image = float((counts * seconds).sum() / (counts**2).sum())
    largest = results["search"][-1]
    fits = {"extraction_seconds_per_image": per_image, "points": points, "n": largest["n"]}
    searches = {
        "ours": largest["ours_seconds"],
        "original": largest["original_seconds"],
        "candidates": min(variant["seconds"] for variant in largest["variants"].values()),
    }
    for name, seconds_at_largest in searches.items():
        a = seconds_at_largest / largest["n"] ** 2
        fits[name] = {"a": a, "crossover": per_image / a}
    return fits


def run(plan: Plan) -> dict:
    """Every measurement of one run, as a JSON-ready dict."""
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "plan": dataclasses.asdict(plan),
        "machine": {**common.machine_facts(), **versions()},
    }
    common.log(f"extraction: VGG16 cut at {extract_bench.LAYER}, {plan.image_size} px")
    model = extract_bench.build_extractor(plan.image_size)
    results["extraction"] = measure_extraction(plan, model)
    results["fresh_settings"] = measure_fresh_settings(plan)
    for row in results["fresh_settings"]:
        if row["setting"] == DEFAULT_FRESH and "matmul_gflops" in row:
            results["extraction"]["matmul"]["tf_float32_fresh"] = row["matmul_gflops"]
    results["growth"] = measure_memory_and_growth(plan, model)
    results["search"] = search_bench.benchmark_search(
        plan.search_sizes, plan.dimensions, plan.max_queries, plan.rounds
    )
    results["fits"] = fit_growth(results)
    results["seconds"] = common.elapsed()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks that everything runs"
    )
    args = parser.parse_args(argv)
    results = run(QUICK if args.quick else Plan())
    markdown = report.render(results, quick=args.quick)
    files.atomic_write_text(args.out, markdown)
    files.atomic_write_text(
        args.out.with_suffix(".json"), json.dumps(results, indent=2, default=float) + "\n"
    )
    print(markdown)
    common.log(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
