"""The search and certificate on Ray, over Parquet shards: the in-process answer, exactly."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import time

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: loopback only

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from snowflake_tools import ann, ray_extract, sharded_search

TOP_N = 20
#: A loopback address as ``ss`` prints it.
LOOPBACK = re.compile(r"^(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):\d+$")


def clustered_rows(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    """Non-negative clustered rows, a few planted outliers, groups of exact copies."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(0.6, 1.0, (12, d))
    rows = np.maximum(centres[rng.integers(0, 12, n)] + 0.3 * rng.standard_normal((n, d)), 0)
    rows[rng.choice(n, 8, replace=False)] = rng.gamma(0.6, 3.0, (8, d))  # outliers
    for group in rng.choice(n, (10, 3), replace=False):  # copies, wherever they fall
        rows[group[1:]] = rows[group[0]]
    return rows.astype(np.float32)


def write_shards(rows: np.ndarray, folder, parts: int) -> list:
    """``rows`` in ``parts`` Parquet shards (plus one unreadable-image row in the first)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, block in enumerate(np.array_split(rows, parts)):
        vectors, errors = block, [""] * len(block)
        if number == 0:  # an image that could not be read: its row is no flake
            vectors = np.vstack([np.full((1, rows.shape[1]), 7.0, np.float32), block])
            errors = ["cannot decode", *errors]
        names = [f"{number}-{i}" for i in range(len(vectors))]
        table = ray_extract.shard_table(names, names, vectors, errors, "node", (0.0, 0.0))
        paths.append(folder / f"{number:03d}.parquet")
        pq.write_table(table, paths[-1])
    return paths


@pytest.fixture(scope="module")
def local_ray():
    ray_extract.start_ray(None, num_cpus=2)
    yield
    ray_extract.stop_ray()


def same_certified_top(sharded, local, top_n: int = TOP_N) -> bool:
    """Same certified top-N scores, rank by rank (ties may swap flakes)."""
    ours = np.sort(sharded.certified.scores)[::-1][:top_n]
    theirs = np.sort(local.certified.scores)[::-1][:top_n]
    return bool(np.allclose(ours, theirs, rtol=1e-5))


@pytest.mark.parametrize(
    ("cells", "nprobe", "group_rows"),
    [(None, None, 500), (200, 1, 400)],  # several regions; a sloppy index with many misses
)
def test_same_answer_as_in_process(local_ray, tmp_path, cells, nprobe, group_rows):
    rows = clustered_rows(3000)
    paths = write_shards(rows, tmp_path / "shards", parts=5)
    sharded = sharded_search.rank_sharded(
        paths, tmp_path, TOP_N, cells=cells, nprobe=nprobe, group_rows=group_rows,
        progress=False,
    )  # fmt: skip
    local, _, distinct = ann.rank_at_scale(rows, "flat", TOP_N)

    assert sharded.n_rows == 3000 and sharded.n_distinct == local.n_distinct
    assert sharded.settings["regions"] > 1
    assert sharded.certified.holds
    assert same_certified_top(sharded, local)
    top = np.argsort(-sharded.certified.scores, kind="stable")[:TOP_N]
    np.testing.assert_array_equal(rows[sharded.distinct_rows[top]], distinct[top])
    # Scores stay upper bounds of the exact ones; copies are counted where they went.
    assert (sharded.certified.scores >= local.certified.scores * (1 - 1e-5)).all()
    assert sharded.copies_of.sum() == 3000 - local.n_distinct
    record = sharded.record()
    assert (
        record["certified"]
        and record["certificate_candidates"] == sharded.certified.candidates_checked
    )
    assert set(record["nodes_by_phase"]) >= {"scan", "train", "assign", "search", "certify"}
    assert not list(tmp_path.glob(".regions-*"))  # the region files are gone


def test_sloppy_index_misses_are_caught(local_ray, tmp_path):
    rows = clustered_rows(3000, seed=1)
    paths = write_shards(rows, tmp_path / "shards", parts=3)
    sharded = sharded_search.rank_sharded(
        paths, tmp_path, TOP_N, cells=300, nprobe=1, group_rows=300, progress=False
    )
    local, _, _ = ann.rank_at_scale(rows, "flat", TOP_N)
    missed = sharded.approximate_nearest != local.certified.nearest
    assert missed.sum() > 100  # the index really is sloppy
    assert same_certified_top(sharded, local)


def test_unreadable_shard_stops_with_its_name(local_ray, tmp_path):
    paths = write_shards(clustered_rows(300), tmp_path / "shards", parts=3)
    paths[1].write_bytes(b"not parquet at all")
    with pytest.raises(ray_extract.DamagedShardError, match="001.parquet") as caught:
        sharded_search.rank_sharded(paths, tmp_path, 5, progress=False)
    assert "\n" not in str(caught.value)


def test_choose_path():
    assert sharded_search.choose_path(sharded_search.LOCAL_MAX_ROWS) == "local"
    assert sharded_search.choose_path(sharded_search.LOCAL_MAX_ROWS + 1) == "ray"
    assert sharded_search.choose_path(10, "ray") == "ray"
    with pytest.raises(ValueError, match="SEARCH must be one of"):
        sharded_search.choose_path(10, "cluster")


def test_damaged_shard_error_crosses_processes(tmp_path):
    error = ray_extract.DamagedShardError(tmp_path / "001.parquet", "file is too short")
    copy = pickle.loads(pickle.dumps(error))  # how a Ray task's error reaches the driver
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


def test_non_finite_values_name_the_shard(tmp_path):
    rows = clustered_rows(30)
    rows[3, 2] = np.nan
    paths = write_shards(rows, tmp_path / "shards", parts=2)
    with pytest.raises(ray_extract.DamagedShardError, match="000.parquet.*not finite"):
        sharded_search.read_vectors(paths[0])


def listening_addresses(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets these processes listen on (``ss -ltnp``)."""
    output = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    return [
        line.split()[3]
        for line in output.splitlines()
        if {int(pid) for pid in re.findall(r"pid=(\d+)", line)} & pids
    ]


@pytest.mark.slow
def test_two_nodes_both_search_and_certify(two_node_cluster, tmp_path):
    info = ray_extract.start_ray(two_node_cluster.address)
    deadline = time.monotonic() + 180  # a busy machine registers the second node late
    while info["nodes"] < 2 and time.monotonic() < deadline:
        time.sleep(1)
        info = ray_extract.start_ray(two_node_cluster.address)  # connected: counts again
    assert info["nodes"] == 2
    rows = clustered_rows(4000, seed=2)
    paths = write_shards(rows, tmp_path / "shards", parts=6)
    sharded = sharded_search.rank_sharded(paths, tmp_path, TOP_N, group_rows=400, progress=False)
    ray_processes = {child.pid for child in psutil.Process().children(recursive=True)}
    listening = listening_addresses(ray_processes)
    ray_extract.stop_ray()
    two_node_cluster.shutdown()

    nodes = sharded.record()["nodes_by_phase"]
    assert len(nodes["search"]) == 2 and len(nodes["certify"]) == 2, nodes
    local, _, _ = ann.rank_at_scale(rows, "flat", TOP_N)
    assert sharded.certified.holds and same_certified_top(sharded, local)
    assert listening and all(LOOPBACK.match(address) for address in listening), listening
    _, alive = psutil.wait_procs(
        [psutil.Process(pid) for pid in ray_processes if psutil.pid_exists(pid)], timeout=60
    )
    assert not alive, [process.cmdline()[:3] for process in alive]
