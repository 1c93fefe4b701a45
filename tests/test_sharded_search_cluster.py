"""The search and certificate on a two-node Ray cluster started on this machine: both nodes
search and certify, and the answer is the in-process one."""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: loopback only

import psutil
import pytest
from helpers import LOOPBACK, clustered_rows, listening_addresses, same_certified_top, write_shards

from snowflake_tools import ann, ray_extract, sharded_search

pytestmark = pytest.mark.slow
TOP_N = 20


def test_two_nodes_both_search_and_certify(two_node_cluster, tmp_path):
    assert ray_extract.start_ray(two_node_cluster.address)["nodes"] == 2
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
