"""Child process of the benchmarks: one measurement that needs a fresh process.

Run by ``common.run_child`` as ``python benchmarks/worker.py '<task as JSON>'``; prints its
result as one JSON line. Fresh processes are needed for settings read once at start-up
(``TF_ENABLE_ONEDNN_OPTS``, ``ONEDNN_DEFAULT_FPMATH_MODE``, ``OPENBLAS_CORETYPE``, thread
pools) and for peak memory, which a process can only report for itself.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import common


def extract(task: dict) -> dict:
    """Extraction rate and the float32 matmul rate, both measured in this process."""
    import tensorflow as tf

    if task.get("intra_op_threads"):  # must precede TensorFlow's first operation
        tf.config.threading.set_intra_op_parallelism_threads(task["intra_op_threads"])
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import extract_bench

    model = extract_bench.build_extractor(task["image_size"])
    measured = extract_bench.side_by_side(
        model,
        task["image_size"],
        [task["batch_size"]],
        task["batch_size"],
        task["matmul_size"],
        task["rounds"],
        variants=False,
    )
    return {
        "seconds_per_image": measured["sweep"][str(task["batch_size"])],
        "matmul_gflops": measured["matmul"]["tf_float32"],
    }


def numpy_matmul(task: dict) -> dict:
    """numpy's float32 matmul rate and OpenBLAS kernel under this process's environment."""
    import extract_bench

    call, gflop = extract_bench.numpy_matmul(task["size"])
    return {
        "gflops": gflop / common.best_seconds(call, task["calls"]),
        "kernel": extract_bench.numpy_blas_kernel(),
    }


def memory(task: dict) -> dict:
    """Peak memory of one way of extracting features from the PNG files in ``image_dir``."""
    import extract_bench
    import memory_bench

    paths = sorted(Path(task["image_dir"]).glob("*.png"))[: task["images"]]
    model = extract_bench.build_extractor(task["image_size"])
    baseline = common.peak_rss_mib()
    started = time.perf_counter()
    if task["way"] == "original":
        result = memory_bench.extract_original_way(model, paths, task["image_size"])
    else:
        result = memory_bench.extract_streaming(model, paths, task["batch_size"])
    return {
        "seconds": time.perf_counter() - started,
        "peak_mib": common.peak_rss_mib(),
        "baseline_mib": baseline,
        "rows": int(result.shape[0]),
        "values": int(result.shape[1]),
        "feature_mib": result.nbytes / 2**20,
    }


TASKS = {"extract": extract, "numpy_matmul": numpy_matmul, "memory": memory}

if __name__ == "__main__":
    task = json.loads(sys.argv[1])
    common.report_to_parent(TASKS[task["kind"]](task))
