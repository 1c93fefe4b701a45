"""``make bench-scale``: uniqueness at 10k, 100k and 1M rows, and extraction on Ray Data.

Search: synthetic 512-value rows shaped like pooled VGG16 features (non-negative before
normalising, clustered, unit length) with planted outliers and groups of exact copies. Each
size runs in a child process, so that its peak memory is its own. Per size and index: build,
full search, certification (candidates checked), recall@1 on sampled rows, and the certified top-100
against exact brute force (in full up to 100,000 rows; beyond, brute force is timed on blocks
of queries and projected).

Extraction: ``features.extract_features`` in this process against the Ray Data pipeline of
notebook 04 on a local Ray, and on a two-node Ray cluster started on this machine (every node
must do work). Every Ray process listens on 127.0.0.1 only and is shut down here.

Sharded (``--sharded-sizes``, 1,000,000 and 10,000,000 rows by default, and
``--two-node-sizes``, 1,000,000; ``--only-sharded`` runs nothing else): the same kind of rows
written shard by shard to Parquet in a temporary folder (never all in memory; about 2 KiB per
row on disk), then ``sharded_search.rank_sharded`` on a local Ray (or on a two-node cluster
started on this machine, each node with half the CPUs):
the time of each phase, the peak memory of the driver and of every Ray worker (psutil polling
of the process tree), recall@1, and, up to ``--compare-max`` rows (1,000,000), whether the
in-process path's certified top-100 is the same. At 10,000,000 rows this takes its half hour
or more on 2 cores; ``--only-sharded --sharded-sizes 10000000`` reruns just that case.

``--quick`` runs everything small (a test uses it); the numbers are then meaningless.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: loopback only

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
from common import RESULT_PREFIX, log

from snowflake_tools import ann, runinfo, search

TOP_N = 100
RECALL_SAMPLE = 1000
#: Above this many rows, exact brute force is projected from timed blocks instead of run.
FULL_BRUTE_FORCE_MAX = 100_000
#: Indexes timed per size: flat only where brute force is affordable, HNSW for the comparison.
KINDS = {"flat": FULL_BRUTE_FORCE_MAX, "ivf": 10**9, "hnsw": FULL_BRUTE_FORCE_MAX}
#: Images per forward pass in both extraction pipelines (the notebooks' BATCH_SIZE).
BATCH = 32
#: The issue's goal for Ray Data's images/s against one process.
RATIO_GOAL = 0.85
#: Interleaved rounds of one process against Ray Data locally (as ``make bench`` does).
ROUNDS = 3
#: Queries timed to project brute force beyond FULL_BRUTE_FORCE_MAX rows.
PROJECTION_QUERIES = 1024


def synthetic_rows(n: int, d: int = 512, seed: int = 0) -> np.ndarray:
    """``n`` rows like pooled features: sparse non-negative clusters, outliers, exact copies.

    About ``sqrt(n)`` clusters of different spread; 0.1 % of rows are outliers drawn far from
    every cluster; 1 % of rows are exact copies of other rows (groups of 2 to 4).
    """
    rng = np.random.default_rng(seed)
    centres, spread = _clusters(rng, n, d)
    rows = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: the noise would double peak memory
        stop = min(n, start + 100_000)
        rows[start:stop] = _clustered(rng, centres, spread, stop - start)
    _plant_outliers_and_copies(rng, rows)
    return rows


def _clusters(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """About ``sqrt(n)`` cluster centres ``(clusters, d)`` and their spreads."""
    clusters = max(2, int(np.sqrt(n)))
    centres = rng.gamma(0.6, 1.0, (clusters, d)).astype(np.float32)
    return centres, rng.uniform(0.2, 0.6, clusters).astype(np.float32)


def _clustered(rng: np.random.Generator, centres, spread, size: int) -> np.ndarray:
    """``size`` non-negative rows, each near a randomly chosen centre."""
    label = rng.integers(0, len(centres), size)
    noise = rng.standard_normal((size, centres.shape[1]), dtype=np.float32)
    return np.maximum(centres[label] + spread[label, None] * noise, 0)


def _plant_outliers_and_copies(rng: np.random.Generator, rows: np.ndarray) -> None:
    """In place: 0.1 % outliers far from every cluster, unit length, 1 % exact copies."""
    n, d = rows.shape
    outliers = rng.choice(n, max(1, n // 1000), replace=False)
    rows[outliers] = rng.gamma(0.6, 2.0, (len(outliers), d))
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    copies = rng.choice(n, max(2, n // 100), replace=False)
    for group in np.array_split(copies, max(1, len(copies) // 3)):
        rows[group[1:]] = rows[group[0]]


#: Rows per Parquet shard of the sharded case (about 1 GiB of 512-value rows).
SHARD_ROWS = 500_000
#: Seconds between two polls of the memory of the driver and of the Ray workers.
MEMORY_POLL_S = 1.0


def write_synthetic_shards(n: int, folder: Path, shard_rows: int = SHARD_ROWS, d: int = 512):
    """``n`` rows like :func:`synthetic_rows` in Parquet shards, one shard in memory at a time.

    Every shard draws from the same clusters; each also holds exact copies of rows of the
    shard before it, so that copies are split across shards. Returns the shard paths.
    """
    import pyarrow.parquet as pq

    from snowflake_tools import ray_extract

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    centres, spread = _clusters(rng, n, d)
    paths, previous = [], None
    for number, start in enumerate(range(0, n, shard_rows)):
        size = min(shard_rows, n - start)
        rows = _clustered(rng, centres, spread, size)
        _plant_outliers_and_copies(rng, rows)
        if previous is not None:  # copies of the shard before: a copy split across shards
            rows[rng.choice(size, len(previous), replace=False)] = previous
        previous = rows[rng.choice(size, min(size, 50), replace=False)].copy()
        names = [f"{number}-{i}" for i in range(size)]
        table = ray_extract.shard_table(names, names, rows, [""] * size, "bench", (0.0, 0.0))
        paths.append(folder / f"{number:04d}.parquet")
        pq.write_table(table, paths[-1])
        del rows, table
    return paths


class MemoryPoller:
    """Peak memory of this process and of each other process of its tree (psutil).

    Two measures per process: its own memory (resident and not shared: what it alone holds)
    and its whole resident set, which also counts the pages of files it maps (the region
    files, page cache the kernel reclaims at need) and of Ray's shared object store (counted
    in every process that reads an object, though it is held once).
    """

    def __init__(self):
        import threading

        import psutil

        self.me = psutil.Process()
        self.peaks: dict = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.stop.wait(MEMORY_POLL_S):
            for process in [self.me, *self.me.children(recursive=True)]:
                try:
                    key = (process.pid, " ".join(process.cmdline()[:3])[-60:])
                    memory = process.memory_info()
                except Exception:
                    continue
                own, rss = (memory.rss - memory.shared) / 2**20, memory.rss / 2**20
                before = self.peaks.get(key, (0.0, 0.0))
                self.peaks[key] = (max(before[0], own), max(before[1], rss))

    def finish(self) -> dict:
        """``{"driver_mib", "driver_rss_mib", "largest_worker_mib", "largest_worker_rss_mib",
        "largest_worker"}`` of the polls (``*_mib``: own memory)."""
        self.stop.set()
        self.thread.join()
        others = {key: peak for key, peak in self.peaks.items() if key[0] != self.me.pid}
        largest = max(others, key=lambda key: others[key][0], default=None)
        mine = [peak for key, peak in self.peaks.items() if key[0] == self.me.pid]
        # Polled, not the process's lifetime peak: writing the shards before is no part of it.
        return {"driver_mib": max((own for own, _ in mine), default=0.0),
                "driver_rss_mib": max((rss for _, rss in mine), default=0.0),
                "largest_worker_mib": others[largest][0] if largest else 0.0,
                "largest_worker_rss_mib": max((rss for _, rss in others.values()), default=0.0),
                "largest_worker": largest[1] if largest else ""}  # fmt: skip


#: Tries to start Ray for the sharded case, a minute apart: a run of half an hour should not be
#: lost to a machine that was too busy for Ray's start-up at one moment.
RAY_START_TRIES = 5


def start_ray_when_it_can() -> dict:
    """``ray_extract.start_ray(None)``, tried again while the machine is too busy for it."""
    from snowflake_tools import ray_extract

    for attempt in range(1, RAY_START_TRIES):
        try:
            return ray_extract.start_ray(None)
        except RuntimeError as error:
            progress(f"{error} (try {attempt} of {RAY_START_TRIES}; again in a minute)")
            time.sleep(60)
    return ray_extract.start_ray(None)


@contextlib.contextmanager
def ray_for_bench(nodes: int, extra_cpus: int = 0):
    """Ray for a case: the local instance (``nodes=1``), or a cluster of ``nodes`` on this
    machine, each with its share of the CPUs plus ``extra_cpus``."""
    from snowflake_tools import ray_extract

    if nodes == 1:
        try:
            yield start_ray_when_it_can()
        finally:
            ray_extract.stop_ray()
        return
    from ray.cluster_utils import Cluster

    cpus = max(1, (os.cpu_count() or 2) // nodes) + extra_cpus
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False}
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes(timeout=300)  # a busy machine registers nodes late
        yield ray_extract.start_ray(cluster.address)
    finally:
        ray_extract.stop_ray()
        cluster.shutdown()


def sharded_case(
    n: int, compare_max: int, nodes: int = 1, group_rows: int | None = None,
    nprobe: int | None = None,
) -> dict:  # fmt: skip
    """The sharded path on ``n`` rows from shards on disk (this child process is the driver),
    on ``nodes`` Ray nodes, ``group_rows`` rows per region and ``nprobe`` cells per row
    (``sharded_search``'s defaults when None)."""
    from snowflake_tools import ray_extract, sharded_search

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as folder:
        started = time.perf_counter()
        # In a process of its own: Arrow's memory pool keeps what writing took (about 1 GiB),
        # which would count as the driver's; in real use Ray's workers write the shards.
        shards = run_child(["--child-shards", str(n), str(Path(folder) / "shards")])
        paths = [Path(path) for path in shards["paths"]]
        write_seconds = time.perf_counter() - started
        progress(f"n = {n:,}: shards written in {write_seconds:,.1f} s")
        poller = MemoryPoller()
        with ray_for_bench(nodes) as info:
            started = time.perf_counter()
            ranking = sharded_search.rank_sharded(
                paths, folder, TOP_N, recall_sample=RECALL_SAMPLE, progress=False,
                group_rows=group_rows or sharded_search.GROUP_ROWS, nprobe=nprobe,
                on_phase=lambda phase, wall: progress(f"n = {n:,}: {phase} {wall:,.1f} s"),
            )  # fmt: skip
            # The recall sample is the bench's check, not part of the ranking: timed apart.
            recall_seconds = ranking.seconds.get("recall", 0.0)
            total = time.perf_counter() - started - recall_seconds
        memory = poller.finish()
        record = ranking.record()
        result = {
            "n": n, "n_distinct": ranking.n_distinct, "shards": len(paths),
            "write_seconds": write_seconds, "total_seconds": total,
            "recall_seconds": recall_seconds,
            "seconds": ranking.seconds, "index": ranking.settings,
            "certificate_candidates": ranking.certified.candidates_checked,
            "certify_rounds": ranking.certified.rounds,
            "certified": ranking.certified.holds, "recall_at_1": ranking.recall_at_1[0],
            "recall_sample": ranking.recall_at_1[1], "nodes": info["nodes"], **memory,
            "peak_task_mib": record["peak_task_memory_mib"],
            "nodes_by_phase": {phase: len(ids) for phase, ids in record["nodes_by_phase"].items()},
        }  # fmt: skip
        if n <= compare_max:  # the in-process path on the same rows, stacked in memory
            table = ray_extract.read_shards(Path(folder) / "shards", ["vector"])
            rows = ray_extract.vector_matrix(table.column("vector"))
            del table
            progress(f"n = {n:,}: the in-process path on the same rows")
            started = time.perf_counter()
            local, _, _ = ann.rank_at_scale(rows, "auto", TOP_N)
            result["in_process_seconds"] = time.perf_counter() - started
            ours = np.sort(ranking.certified.scores)[::-1][:TOP_N]
            theirs = np.sort(local.certified.scores)[::-1][:TOP_N]
            # Both number the distinct rows alike (first of each copy group, in shard order).
            result["same_top_as_in_process"] = same_top(
                ranking.certified.scores, local.certified.scores, TOP_N
            ) and bool(np.allclose(ours, theirs, rtol=1e-5))
            result["top_scores"] = {"sharded": ours.tolist(), "in_process": theirs.tolist()}
            result["largest_relative_difference"] = float(np.max(np.abs(ours - theirs) / theirs))
        progress(
            f"n = {n:,}: done {json.dumps({k: v for k, v in result.items() if k != 'top_scores'})}"
        )
    return result


def exact_scores(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact nearest-distinct-neighbour distance of ``rows`` by brute force."""
    return ann.knn_scores(ann.BruteForce(vectors), vectors, rows, 1)[1]


def same_top(scores: np.ndarray, exact: np.ndarray, top_n: int, rtol: float = 1e-5) -> bool:
    """Whether the top-``top_n`` by ``scores`` is the exact one, up to ties.

    Rank by rank the scores must match the exact ones; where the flakes differ, their exact
    scores must tie (within ``rtol``) with the other list's flake. The certificate and the
    brute force compute a pair's distance in different batches, which BLAS may round apart in
    the last bit (how it blocks a product depends on the CPU and on the batch), so two flakes
    that tie may come out in either order.
    """
    top = np.argsort(-scores, kind="stable")[:top_n]
    exact_top = np.argsort(-exact, kind="stable")[:top_n]
    return bool(
        np.allclose(scores[top], exact[exact_top], rtol=rtol)
        and np.allclose(exact[top], exact[exact_top], rtol=rtol)
    )


def search_case(n: int, kind: str, full_brute_force_max: int = FULL_BRUTE_FORCE_MAX) -> dict:
    """One size and index kind, in this (child) process: the numbers of the search table."""
    rows = synthetic_rows(n)
    started = time.perf_counter()
    groups, first_rows, _ = search.group_copies(rows)
    distinct = rows[first_rows]
    del rows
    copies_seconds = time.perf_counter() - started
    settings = ann.choose_index(len(distinct), kind)
    started = time.perf_counter()
    index = ann.build_index(distinct, settings)
    build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    nearest, scores = ann.knn_scores(index, distinct, np.arange(len(distinct)), 1)
    search_seconds = time.perf_counter() - started
    del index
    certified = ann.certify_top(distinct, nearest, scores, TOP_N)
    total = copies_seconds + build_seconds + search_seconds + certified.seconds
    recall, sampled = ann.recall_at_1(distinct, nearest, RECALL_SAMPLE)

    result = {
        "n": n, "n_distinct": len(distinct), "index": settings,
        "copies_seconds": copies_seconds, "build_seconds": build_seconds,
        "search_seconds": search_seconds, "certify_seconds": certified.seconds,
        "certificate_candidates": certified.candidates_checked, "certify_rounds": certified.rounds,
        "total_seconds": total, "recall_at_1": recall, "recall_sample": sampled,
    }  # fmt: skip
    if len(distinct) <= full_brute_force_max:
        started = time.perf_counter()
        exact = exact_scores(distinct, np.arange(len(distinct)))
        result["brute_force_seconds"] = time.perf_counter() - started
        result["brute_force_projected"] = False
        result["top_equals_brute_force"] = same_top(certified.scores, exact, TOP_N)
    else:
        # Time exact search on blocks of queries and project; check the candidates' exact
        # scores (the certificate's) against a fresh brute force of the top.
        queries = min(PROJECTION_QUERIES, len(distinct))
        block = np.random.default_rng(1).choice(len(distinct), queries, False)
        started = time.perf_counter()
        exact_scores(distinct, block)
        per_query = (time.perf_counter() - started) / len(block)
        result["brute_force_seconds"] = per_query * len(distinct)
        result["brute_force_projected"] = True
        top = np.argsort(-certified.scores, kind="stable")[:TOP_N]
        result["top_equals_brute_force"] = bool(
            np.allclose(certified.scores[top], exact_scores(distinct, top), rtol=1e-5)
        )
    result["speedup"] = result["brute_force_seconds"] / total
    result["peak_memory_mib"] = runinfo.peak_memory_mib()
    del groups
    return result


def progress(message: str) -> None:
    """A child's progress line, on stderr (its stdout carries the result), at once."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_child(arguments: list[str], stream: bool = False) -> dict:
    """Run this script with ``arguments`` in a fresh process; return its JSON result.

    ``stream`` passes the child's stderr (its progress lines) straight through.
    """
    completed = subprocess.run(
        [sys.executable, __file__, *arguments], stdout=subprocess.PIPE,
        stderr=None if stream else subprocess.PIPE, text=True, check=False,
    )  # fmt: skip
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    stderr = completed.stderr[-3000:] if completed.stderr else ""
    raise RuntimeError(f"{arguments} failed:\n{completed.stdout[-3000:]}{stderr}")


def extraction_cases(n_images: int, image_size: int, folder: Path) -> dict:
    """Images/s of ``extract_features`` in one process, of Ray Data locally and on two nodes."""
    # Imported here, not at the top: the search children must not carry TensorFlow's memory.
    from snowflake_tools import demo, features, images, ray_extract

    image_dir = folder / "images"
    demo.make_demo_set(image_dir, count=n_images, side=256, progress=False)
    paths = images.list_images(image_dir)
    base, _ = features.load_vgg16(None, image_size)
    extractor = features.cut_at_layer(base, "block5_conv3")
    arguments = dict(
        model_settings={"weights": None, "image_size": image_size},
        layer="block5_conv3",
        feature_vector="gap",
        expected_fingerprint=features.fingerprint(extractor),
    )
    # Warmed up like each Ray actor (FeatureExtractor's warm_up_batch): both sides time batches
    features.run_model(extractor, np.zeros((BATCH, image_size, image_size, 3), np.float32))
    one_process, ray_local = [], []

    def in_one_process():
        one_process.append(features.extract_features(extractor, paths, BATCH, progress=False))

    def through_ray():  # a new shard folder each round, so that every round extracts everything
        shards = folder / f"local-{len(ray_local)}"
        ray_local.append(ray_extract.extract_to_shards(paths, image_dir, shards, arguments, BATCH))

    log(f"extraction: {len(paths)} images at {image_size} px, one process and Ray Data locally, "
        f"{ROUNDS} interleaved rounds")  # fmt: skip
    ray_extract.start_ray(None)
    try:
        common.interleaved({"one process": in_one_process, "Ray Data": through_ray}, ROUNDS)
    finally:
        ray_extract.stop_ray()
    one_seconds = [run.seconds for run in one_process]
    cases = {"n_images": len(paths), "image_size": image_size, "batch_size": BATCH}
    cases["rounds"] = ROUNDS
    cases["one_process"] = {
        "seconds": statistics.median(one_seconds),
        "images_per_second": len(paths) / statistics.median(one_seconds),
        "all_seconds": one_seconds,
    }
    cases["ray_local"] = ray_case(ray_local, len(paths))
    # Per round, side by side: how fast are Ray's batches against one process, and what does
    # Ray add once per run (hashing, starting actors that each import TensorFlow)?
    batch_ratios = [a / b.batch_seconds for a, b in zip(one_seconds, ray_local, strict=True)]
    whole_ratios = [a / b.seconds for a, b in zip(one_seconds, ray_local, strict=True)]
    cases["ratio_local_to_one_process"] = common.summary(batch_ratios)
    cases["ratio_local_to_one_process_end_to_end"] = common.summary(whole_ratios)
    fixed = statistics.median(run.seconds - run.batch_seconds for run in ray_local)
    cases["ray_local_fixed_seconds"] = fixed
    # Images at which the end-to-end ratio would reach RATIO_GOAL, if these rates held.
    one_per_image = cases["one_process"]["seconds"] / len(paths)
    ray_per_image = cases["ray_local"]["batch_seconds"] / len(paths)
    slack = one_per_image - RATIO_GOAL * ray_per_image
    cases["images_for_ratio_goal"] = RATIO_GOAL * fixed / slack if slack > 0 else None

    log("extraction: Ray Data, two-node cluster on this machine")
    # One CPU more per node than its share: each node's actor leaves a CPU for hashing.
    with ray_for_bench(2, extra_cpus=1) as info:
        run = ray_extract.extract_to_shards(paths, image_dir, folder / "cluster", arguments, BATCH)
    cases["ray_two_nodes"] = ray_case([run], len(paths)) | {
        "nodes": info["nodes"], "every_node_worked": len(run.work_by_node) == info["nodes"],
    }  # fmt: skip
    return cases


def ray_case(runs: list, n_images: int) -> dict:
    """Median numbers of Ray Data runs: end to end, and their batches alone."""
    seconds = statistics.median(run.seconds for run in runs)
    batch_seconds = statistics.median(run.batch_seconds for run in runs)
    return {
        "seconds": seconds, "images_per_second": n_images / seconds,
        "batch_seconds": batch_seconds, "batch_images_per_second": n_images / batch_seconds,
        "hash_seconds": statistics.median(run.hash_seconds for run in runs),
        "rows_per_node": list(runs[-1].work_by_node.values()),
    }  # fmt: skip


def ratio_text(ratio: dict) -> str:
    """``median (min-max)`` of a :func:`common.summary` of ratios."""
    return f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})"


def report(search_results: list[dict], extraction: dict) -> str:
    """The Markdown report."""
    lines = [
        "# Scale benchmark (notebook 04)",
        "",
        f"Machine: {os.cpu_count()} logical CPUs. Synthetic 512-value unit rows (clustered, "
        f"outliers, 1 % exact copies); top-{TOP_N} certified exact; recall@1 on "
        f"{RECALL_SAMPLE:,} sampled rows. Brute force marked * is projected from timed blocks.",
    ]
    if search_results:
        lines += [
            "",
            "| n | index | build s | search s | certify s | candidates | total s | recall@1 "
            "| peak MiB | brute force s | speed-up | top = brute force (ties either way) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in search_results:
        star = "*" if r["brute_force_projected"] else ""
        settings = ", ".join(f"{key}={value}" for key, value in r["index"].items() if key != "kind")
        lines.append(
            f"| {r['n']:,} | {r['index']['kind']} {settings} | {r['build_seconds']:.1f} | "
            f"{r['search_seconds']:.1f} | {r['certify_seconds']:.1f} | "
            f"{r['certificate_candidates']:,} | "
            f"{r['total_seconds']:.1f} | {r['recall_at_1']:.3f} | {r['peak_memory_mib']:,.0f} | "
            f"{r['brute_force_seconds']:.1f}{star} | {r['speedup']:.1f}× | "
            f"{'yes' if r['top_equals_brute_force'] else 'NO'} |"
        )
    if extraction:
        one, local, two = (extraction[k] for k in ["one_process", "ray_local", "ray_two_nodes"])
        lines += [
            "",
            f"## Extraction: {extraction['n_images']} images at {extraction['image_size']} px "
            "(GAP features)",
            "",
            f"Batch size {extraction['batch_size']}; one process and Ray Data locally take turns "
            f"for {extraction['rounds']} rounds (medians; the two-node cluster runs once). "
            "One process: `extract_features`, model "
            "already built and run once on a blank batch, as each Ray actor does. Ray Data: "
            "`extract_to_shards` on a running Ray; *batches* is from "
            "the start of the first batch to the end of the last, *end to end* adds hashing "
            "the files and starting the actors.",
            "",
            "| pipeline | batches s | images/s | end to end s | images/s | rows per node |",
            "|---|---|---|---|---|---|",
            f"| extract_features, one process | {one['seconds']:.1f} | "
            f"{one['images_per_second']:.2f} | {one['seconds']:.1f} | "
            f"{one['images_per_second']:.2f} | |",
            *(
                f"| {name} | {run['batch_seconds']:.1f} | {run['batch_images_per_second']:.2f} "
                f"| {run['seconds']:.1f} | {run['images_per_second']:.2f} | "
                f"{run['rows_per_node']} |"
                for name, run in [("Ray Data, local", local), ("Ray Data, two nodes", two)]
            ),
            "",
            f"Ray Data local / one process (images/s), median of the rounds' ratios (range): "
            f"batches {ratio_text(extraction['ratio_local_to_one_process'])}, end to end "
            f"{ratio_text(extraction['ratio_local_to_one_process_end_to_end'])}. Seconds Ray "
            "adds per "
            f"run: {extraction['ray_local_fixed_seconds']:.1f} (hashing "
            f"{local['hash_seconds']:.1f}). End to end reaches {RATIO_GOAL} at about "
            + (
                f"{extraction['images_for_ratio_goal']:,.0f} images (projected from these rates)."
                if extraction["images_for_ratio_goal"]
                else "no size: the batches alone are slower than that."
            ),
        ]
    return "\n".join(lines) + "\n"


def sharded_report(results: list[dict]) -> str:
    """The Markdown of the sharded cases ("" when none ran)."""
    if not results:
        return ""
    phases = (
        "scan", "copies", "train", "assign", "exchange", "search", "merge", "refine", "certify"
    )  # fmt: skip
    lines = [
        "",
        "## Sharded search and certificate on Ray (rows stay in their shards)",
        "",
        f"Parquet shards of {SHARD_ROWS:,} rows on disk; a local Ray (1 node) or a cluster "
        f"started on this machine (2 nodes, its CPUs shared out); top-{TOP_N} certified; "
        f"recall@1 on {RECALL_SAMPLE:,} sampled rows (their exact search, recall s, is not in the "
        f"total). Memory: a process's own peak (resident, "
        f"not shared) and, in brackets, its peak RSS with mapped files and Ray's shared object "
        f"store; psutil every {MEMORY_POLL_S:g} s.",
        "",
        "| n | nodes (searched, certified) | shards | index | "
        + " | ".join(f"{p} s" for p in phases)
        + " | total s | candidates | certified | recall@1 | recall s | driver MiB "
        "| largest worker MiB | same top as in-process |",
        "|---|---|---|---|" + "---|" * len(phases) + "---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        index = r["index"]
        same = r.get("same_top_as_in_process")
        lines.append(
            f"| {r['n']:,} | {r['nodes']} ({r['nodes_by_phase']['search']}, "
            f"{r['nodes_by_phase']['certify']}) | {r['shards']} | "
            f"IVF-Flat {index['cells']} cells in {index['regions']} regions "
            f"({index['region_rows']['smallest']:,} to {index['region_rows']['largest']:,} "
            f"rows, {index['regions_probed']} probed, {index['queries_per_row']} listing a row, "
            f"searched in {index['visitor_batches']} batches), nprobe {index['nprobe']}; top "
            f"{index['refined']['rows']:,} searched again in {index['refined']['nprobe']} cells "
            f"({index['refined']['rounds']} rounds) | "
            + " | ".join(f"{r['seconds'].get(p, 0):.1f}" for p in phases)
            + f" | {r['total_seconds']:.1f} | {r['certificate_candidates']:,} | "
            f"{'yes' if r['certified'] else 'NO'} "
            f"| {r['recall_at_1']:.3f} | {r['recall_seconds']:.1f} "
            f"| {r['driver_mib']:,.0f} ({r['driver_rss_mib']:,.0f}) | "
            f"{r['largest_worker_mib']:,.0f} ({r['largest_worker_rss_mib']:,.0f}) | "
            + ("not run" if same is None else "yes" if same else "NO")
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_scale.md"))
    parser.add_argument("--sizes", default="10000,100000,1000000", help="rows, comma-separated")
    parser.add_argument("--images", type=int, default=200, help="images for the extraction")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--no-extraction", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test")
    parser.add_argument(
        "--full-brute-force-max",
        type=int,
        default=FULL_BRUTE_FORCE_MAX,
        help="largest n checked against a full brute force (beyond: projected)",
    )
    parser.add_argument(
        "--sharded-sizes", default="1000000,10000000", help="rows of the sharded case, on one node"
    )
    parser.add_argument(
        "--two-node-sizes", default="1000000", help="rows of the sharded case on two nodes"
    )
    parser.add_argument("--only-sharded", action="store_true", help="run the sharded case only")
    parser.add_argument("--no-sharded", action="store_true", help="skip the sharded case")
    parser.add_argument(
        "--compare-max", type=int, default=1_000_000,
        help="largest sharded n also ranked in one process for the comparison",
    )  # fmt: skip
    parser.add_argument(
        "--group-rows", type=int, help="rows per region of the sharded search (its default)"
    )
    parser.add_argument(
        "--sharded-nprobe", type=int, help="cells a row probes in the sharded search (its default)"
    )
    parser.add_argument("--child-search", nargs=2, metavar=("N", "KIND"), help=argparse.SUPPRESS)
    parser.add_argument("--child-sharded", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-shards", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_search:
        n, kind = int(args.child_search[0]), args.child_search[1]
        result = search_case(n, kind, args.full_brute_force_max)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    if args.child_shards:
        paths = write_synthetic_shards(int(args.child_shards[0]), Path(args.child_shards[1]))
        print(RESULT_PREFIX + json.dumps({"paths": [str(path) for path in paths]}), flush=True)
        return
    if args.child_sharded:
        n, nodes = args.child_sharded
        result = sharded_case(n, args.compare_max, nodes, args.group_rows, args.sharded_nprobe)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    if args.only_sharded:
        args.sizes, args.no_extraction = "", True
    if args.quick:
        # Two sizes, so that both the full and the projected brute force run.
        args.sizes, args.images, args.image_size = "1500,3000", 6, 32
        args.full_brute_force_max = 2000
        args.group_rows = 300  # ten regions: both nodes of the two-node case get some

    search_results = []
    for n in [int(size) for size in args.sizes.split(",") if size]:
        for kind, largest in KINDS.items():
            if n <= largest or args.quick:
                log(f"search: n = {n:,}, {kind}")
                limit = ["--full-brute-force-max", str(args.full_brute_force_max)]
                search_results.append(run_child(["--child-search", str(n), kind, *limit]))
    sharded_results = []
    if not args.no_sharded:
        one = "3000" if args.quick else args.sharded_sizes
        two = "3000" if args.quick else args.two_node_sizes
        cases = [(n, 1) for n in one.split(",") if n] + [(n, 2) for n in two.split(",") if n]
        for n, nodes in cases:
            log(f"sharded search: n = {int(n):,}, {nodes} node(s)")
            settings = ["--compare-max", str(args.compare_max)]
            if args.group_rows:
                settings += ["--group-rows", str(args.group_rows)]
            if args.sharded_nprobe:
                settings += ["--sharded-nprobe", str(args.sharded_nprobe)]
            child = ["--child-sharded", n, str(nodes), *settings]
            sharded_results.append(run_child(child, True))
    extraction = {}
    if not args.no_extraction:
        with tempfile.TemporaryDirectory() as folder:
            extraction = extraction_cases(args.images, args.image_size, Path(folder))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(search_results, extraction) + sharded_report(sharded_results))
    record = {"search": search_results, "extraction": extraction, "sharded": sharded_results}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
