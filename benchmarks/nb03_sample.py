"""`make run` notebook by notebook on the demo set, and notebook 03's sample against all flakes.

python benchmarks/nb03_sample.py --out results/nb03_sample.md [--sample-size 30]

Runs notebooks 01 to 04 one after another with papermill and their default parameters, as
`make run` does, but with the images and results in a temporary folder (offline, notebook 01
grows the 60-crystal demo set and ``WEIGHTS = "auto"`` gives random weights). Then it runs
notebook 03 again on a sample (``SAMPLE_SIZE``) and compares its recall table
(``self_retrieval.csv``) with that of every flake (the default, ``SAMPLE_SIZE = None``):
every method's recall@1 per variant and over all variants. Prints markdown tables (times
with the load average around each notebook, since other work on the machine slows a notebook
down) and writes them to ``--out``. About 12 minutes on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import common  # first: puts notebooks/ on the path, quiets TensorFlow's start-up
import pandas as pd
import papermill as pm
import report

from snowflake_tools import files

NOTEBOOKS = common.ROOT / "notebooks"
#: The notebooks of `make run`, in its order.
RUN_ORDER = (
    "01_download_snowflakes",
    "02_most_unique_snowflake",
    "03_how_robust_is_uniqueness",
    "04_a_million_snowflakes",
)
#: How far the sample's recall@1 may stray from all flakes' (docs/performance.md).
TOLERANCE = 0.03


def folders(root: Path) -> dict[str, dict]:
    """Each notebook's folder parameters, laid out as `make run` lays them out under ``root``."""
    images, results = root / "images" / "snowflakes", root / "results"
    return {
        RUN_ORDER[0]: {"IMAGE_DIR": str(images)},
        RUN_ORDER[1]: {"IMAGE_DIR": str(images), "RESULTS_DIR": str(results)},
        RUN_ORDER[2]: {
            "IMAGE_DIR": str(images),
            "RESULTS_DIR": str(results / "robustness"),
            "CACHE_DIR": str(results / "feature_cache"),
        },
        RUN_ORDER[3]: {"IMAGE_DIR": str(images), "RESULTS_DIR": str(results)},
    }


def run_notebook(name: str, out_dir: Path, parameters: dict) -> dict:
    """Run one notebook with papermill: wall and CPU seconds, and the load average around it.

    CPU seconds are the kernel's (a child process, counted once papermill has reaped it); on a
    busy machine they say what the notebook costs better than the wall time does.
    """
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    pm.execute_notebook(
        NOTEBOOKS / f"{name}.ipynb",
        out_dir / f"{name}.ipynb",
        parameters=parameters,
        cwd=NOTEBOOKS,
        progress_bar=False,
    )
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    timing = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    common.log(f"{name}: {json.dumps(timing)}")
    return timing


def compare_recall(sample_csv: Path, all_csv: Path) -> pd.DataFrame:
    """Recall@1 of the sample beside all flakes', per method and variant, and the difference."""
    key = ["method", "variant"]
    sample = pd.read_csv(sample_csv).set_index(key)
    everything = pd.read_csv(all_csv).set_index(key)
    table = pd.DataFrame(
        {
            "sample": sample["recall_at_1"],
            "all flakes": everything.loc[sample.index, "recall_at_1"],
        }
    )
    table["difference"] = table["sample"] - table["all flakes"]
    return table.reset_index()


def measure(root: Path, sample_size: int) -> dict:
    """Time the four notebooks, then notebook 03 on a sample; return everything measured."""
    out_dir = root / "executed"
    out_dir.mkdir(parents=True)
    parameters = folders(root)
    timings = {name: run_notebook(name, out_dir, parameters[name]) for name in RUN_ORDER}
    nb03 = parameters[RUN_ORDER[2]]
    sampled = nb03 | {"RESULTS_DIR": nb03["RESULTS_DIR"] + "_sample", "SAMPLE_SIZE": sample_size}
    out_sample = out_dir / "sample"
    out_sample.mkdir()
    sample_label = f"03 with SAMPLE_SIZE = {sample_size}"
    timings[sample_label] = run_notebook(RUN_ORDER[2], out_sample, sampled)
    runs = {
        label: json.loads((Path(folder) / "run.json").read_text())
        for label, folder in (("sample", sampled["RESULTS_DIR"]), ("all", nb03["RESULTS_DIR"]))
    }
    if runs["all"]["sampled_flakes"] != runs["all"]["n_images"]:
        raise SystemExit("notebook 03's default SAMPLE_SIZE is not None: nothing to compare with")
    recall = compare_recall(
        Path(sampled["RESULTS_DIR"]) / "self_retrieval.csv",
        Path(nb03["RESULTS_DIR"]) / "self_retrieval.csv",
    )
    n_images = len(files.read_manifest(Path(parameters[RUN_ORDER[0]]["IMAGE_DIR"])))
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": common.machine(),
        "n_images": n_images,
        "timings": timings,
        "runs": runs,
        "recall": recall.to_dict("records"),
    }


def render(results: dict) -> str:
    """The markdown tables of one measurement."""
    machine = results["machine"]
    flags = ", ".join(f"{flag} {'yes' if has else 'no'}" for flag, has in machine["flags"].items())
    heading = (
        f"{results['date']}; {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB; flags: {flags}; {results['n_images']} demo images"
    )
    timing_rows = [
        [name, f"{t['seconds']:.0f}", f"{t['cpu_seconds']:.0f}", f"{t['load_before']:.1f}",
         f"{t['load_after']:.1f}"]
        for name, t in results["timings"].items()
    ]  # fmt: skip
    make_run = sum(t["seconds"] for name, t in results["timings"].items() if name in RUN_ORDER)
    timing_rows.append(["**make run (01-04)**", f"**{make_run:.0f}**", "", "", ""])
    timings = report.table(
        ["notebook", "wall s", "CPU s", "load before", "load after"], timing_rows
    )
    recall_rows = [
        [row["method"], row["variant"], f"{row['sample']:.3f}", f"{row['all flakes']:.3f}",
         f"{row['difference']:+.3f}"]
        for row in results["recall"]
    ]  # fmt: skip
    worst = max(abs(row["difference"]) for row in results["recall"])
    recall = report.table(
        ["method", "variant", "recall@1, sample", "recall@1, all flakes", "difference"],
        recall_rows,
    )
    runs = results["runs"]
    facts = report.table(
        ["notebook 03", "flakes with variants", "forward passes", "describe s", "total s"],
        [
            [label, run["sampled_flakes"], run["forward_passes"], run["describe_seconds"],
             run["total_seconds"]]
            for label, run in runs.items()
        ],
    )  # fmt: skip
    verdict = "within" if worst <= TOLERANCE else "NOT within"
    return "\n\n".join(
        [
            report.section("Machine", heading),
            report.section("make run, notebook by notebook", timings),
            report.section(
                "Notebook 03 on a sample",
                facts,
                recall,
                f"Largest difference: {worst:.3f}, {verdict} {TOLERANCE} of all flakes.",
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it")
    parser.add_argument("--sample-size", type=int, default=30, help="SAMPLE_SIZE to compare")
    args = parser.parse_args(argv)
    if args.keep is not None:
        results = measure(args.keep, args.sample_size)
    else:
        with tempfile.TemporaryDirectory(prefix="snowflake-nb03-") as folder:
            results = measure(Path(folder), args.sample_size)
    markdown = render(results)
    files.atomic_write_text(args.out, markdown + "\n")
    files.atomic_write_text(args.out.with_suffix(".json"), json.dumps(results, indent=2) + "\n")
    print(markdown)
    worst = max(abs(row["difference"]) for row in results["recall"])
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
