"""Child process of the benchmarks: one measurement that needs a fresh process.

Run by ``common.run_child`` as ``python benchmarks/worker.py '<task as JSON>'``; prints its
result as one JSON line. Fresh processes give the matrix multiply its own environment (no
``OPENBLAS_CORETYPE``) and give each way of extracting a peak memory of its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import common
import numpy as np


def matmul(task: dict) -> dict:
    """Rates of the matrix-multiply candidates, and the BLAS kernels numpy got here."""
    import extract_bench

    rates = extract_bench.bench_matmul(task["size"], task["rounds"])
    return {"rates": rates, "blas": common.blas_libraries()}


def peak_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux's VmHWM; NaN elsewhere).

    Not ``getrusage``: after fork and exec it reports the larger parent's peak.
    """
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    peak = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]
    return peak[0] / 2**10 if peak else float("nan")


def memory(task: dict) -> dict:
    """Peak memory of one way of extracting features from the PNG files in ``image_dir``."""
    import extract_bench
    from keras.applications import vgg16
    from keras.utils import img_to_array, load_img

    from snowflake_tools import features

    paths = sorted(Path(task["image_dir"]).glob("*.png"))
    size = task["image_size"]
    model = extract_bench.build_extractor(size, features.AUTO)
    baseline, started = peak_mib(), time.perf_counter()
    if task["way"] == "original":  # THE ORIGINAL TUTORIAL'S WAY: every image first, one predict
        pixels = np.array(
            [img_to_array(load_img(path, target_size=(size, size))) for path in paths]
        )
        model.predict(vgg16.preprocess_input(pixels), verbose=0)
    else:  # the project's way: one batch of pixels at a time
        features.extract_features(model, paths, batch_size=task["batch_size"], progress=False)
    return {
        "images": len(paths),
        "seconds": time.perf_counter() - started,
        "peak_mib": peak_mib(),
        "baseline_mib": baseline,
    }


if __name__ == "__main__":
    task = json.loads(sys.argv[1])
    result = {"matmul": matmul, "memory": memory}[task["kind"]](task)
    print(common.RESULT_PREFIX + json.dumps(result), flush=True)
