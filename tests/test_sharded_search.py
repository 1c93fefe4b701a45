"""The search and certificate on Ray, over Parquet shards: the in-process answer, exactly."""

from __future__ import annotations

import os
import pickle

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: loopback only

import faiss
import numpy as np
import pytest
from helpers import clustered_rows, same_certified_top, write_shards

from snowflake_tools import ann, ray_extract, sharded_search

pytestmark = pytest.mark.slow  # Ray: out of `make test-fast`

TOP_N = 20


@pytest.fixture(scope="module")
def local_ray():
    ray_extract.start_ray(None, num_cpus=2)
    yield
    ray_extract.stop_ray()


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


def test_sloppy_index_misses_are_caught(local_ray, tmp_path, monkeypatch):
    rows = clustered_rows(3000, seed=1)
    paths = write_shards(rows, tmp_path / "shards", parts=3)
    local, _, _ = ann.rank_at_scale(rows, "flat", TOP_N)
    runs = {}
    # The top searched again in an eighth of the cells (50 rows first, then those above the
    # top-N-th refined score, 600 at most), or not at all.
    monkeypatch.setattr(sharded_search, "REFINE_FIRST_ROWS", 50)
    for refine_rows in (0, 600):
        monkeypatch.setattr(sharded_search, "REFINE_ROWS", refine_rows)
        runs[refine_rows] = sharded_search.rank_sharded(
            paths, tmp_path, TOP_N, cells=300, nprobe=1, group_rows=300, progress=False
        )
        assert same_certified_top(runs[refine_rows], local)
    missed = runs[0].approximate_nearest != local.certified.nearest
    assert missed.sum() > 100  # the index really is sloppy
    assert runs[0].settings["refined"] == {"rows": 0, "nprobe": 38, "rounds": 0}
    # Searched again, the top rows find the neighbours they missed: the scores outside the
    # exact candidates are bounded lower, nearer the exact top-N (fewer candidates at scale).
    refined = runs[600]
    assert refined.settings["refined"]["nprobe"] == 38  # 300 cells / 8
    assert refined.settings["refined"]["rounds"] >= 2
    assert 50 < refined.settings["refined"]["rows"] <= 600
    assert refined.certified.bound < runs[0].certified.bound
    # The rows of the exact top-N all found their nearest row: their scores are exact already.
    top = np.argsort(-local.certified.scores, kind="stable")[:TOP_N]
    assert (refined.approximate_nearest[top] == local.certified.nearest[top]).all()
    assert (refined.approximate_nearest != local.certified.nearest).sum() < missed.sum()
    assert set(refined.record()["nodes_by_phase"]) >= {"refine"}


def test_regions_searched_one_batch_at_a_time_give_the_same_answer(
    local_ray, tmp_path, monkeypatch
):  # fmt: skip
    # A disk with room for one region's visitors at a time: every region is a batch; and
    # every search task reads one shard's queries.
    monkeypatch.setattr(sharded_search, "VISITOR_DISK_SHARE", 1e-12)
    monkeypatch.setattr(sharded_search, "QUERY_ROWS", 1)
    rows = clustered_rows(3000, seed=4)
    paths = write_shards(rows, tmp_path / "shards", parts=4)
    sharded = sharded_search.rank_sharded(paths, tmp_path, TOP_N, group_rows=500, progress=False)
    local, _, _ = ann.rank_at_scale(rows, "flat", TOP_N)
    assert sharded.settings["visitor_batches"] == sharded.settings["regions"] > 1
    assert same_certified_top(sharded, local)
    assert {"exchange", "search"} <= set(sharded.record()["nodes_by_phase"])


def test_batches_fit_the_budget():
    assert sharded_search.batches_within([3, 3, 3, 10, 1], 6) == [[0, 1], [2], [3], [4]]
    assert sharded_search.batches_within([3, 3, 3], 100) == [[0, 1, 2]]
    assert sharded_search.batches_within([], 100) == []


def test_regions_go_to_the_alive_nodes_in_turn_by_their_cpus(monkeypatch):
    import ray

    a, b, c = ("a" * 56, "b" * 56, "c" * 56)  # node ids: 28 bytes, in hex
    nodes = [
        {"NodeID": b, "Alive": True, "Resources": {"CPU": 1.0}},
        {"NodeID": a, "Alive": True, "Resources": {"CPU": 2.0}},
        {"NodeID": c, "Alive": False, "Resources": {"CPU": 8.0}},  # gone: gets nothing
    ]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    placement = sharded_search.region_placement(7)
    assert [strategy.node_id for strategy in placement] == [a, b, a, a, b, a, a]
    assert all(strategy.soft for strategy in placement)  # a node that leaves hands them on
    monkeypatch.setattr(ray, "nodes", lambda: nodes[2:])
    assert sharded_search.region_placement(2) == ["SPREAD", "SPREAD"]


def test_a_region_searches_its_own_rows_and_its_visitors_exactly(tmp_path, monkeypatch):
    # The tasks run in this process; every answer is checked against brute force over the
    # rows of the cells each query probes in that region.
    monkeypatch.setattr(sharded_search, "_use_assigned_cpus", lambda: None)
    monkeypatch.setattr(sharded_search, "_where", dict)
    rows = clustered_rows(2000, seed=2)
    paths = write_shards(rows, tmp_path / "shards", parts=3)
    quantizer = sharded_search.train_quantizer(40, 3, 0, rows)
    folder = tmp_path / "regions"
    folder.mkdir()
    first_id = 0
    for number, path in enumerate(paths):
        count = len(sharded_search.read_vectors(path))
        keep = np.ones(count, dtype=bool)
        sharded_search.assign_shard(str(path), number, keep, first_id, quantizer, 4, str(folder))
        first_id += count
    regions = len(quantizer["regions"])
    assert regions > 1
    own_cell = np.full(len(rows), -1)
    for group in range(regions):
        parts = sharded_search._load_region(str(folder), group)
        ids, cells = np.concatenate(parts["ids"]), np.concatenate(parts["cells"])
        home = np.concatenate(parts["home"])
        own_cell[ids[home]] = cells[home, 0]
    assert (own_cell >= 0).all()

    visitors = 0
    for batch in ([0], list(range(1, regions))):  # two batches, as a small disk makes them
        for number in range(len(paths)):
            sharded_search.share_visitors(str(folder), number, batch)
        for group in batch:
            parts = sharded_search._load_region(str(folder), group)
            probed = np.concatenate(parts["cells"])
            visitors += (~np.concatenate(parts["home"])).sum()
            answers = [
                sharded_search.search_region(str(folder), group, 2, shards)
                for shards in ([0, 1], [2])
            ]  # in two parts, as for a crowded region
            ids, distances, labels = (
                np.concatenate(a) for a in list(zip(*answers, strict=True))[:3]
            )
            for query, cells, found in zip(ids, probed, distances, strict=True):
                near = np.flatnonzero(np.isin(own_cell, cells[cells >= 0]))
                exact = np.sort(((rows[near] - rows[query]) ** 2).sum(axis=1))[:2]
                np.testing.assert_allclose(found[: len(exact)], exact, rtol=1e-4, atol=1e-3)
            for query, label in zip(ids, labels[:, 0], strict=True):
                assert label < 0 or own_cell[label] in probed[ids == query][0]
    assert visitors > 100  # rows of other regions were searched as queries


def test_the_shards_are_decoded_once(tmp_path, monkeypatch):
    # The scan leaves each shard's rows as .npy; copies and assignment read that, and the
    # assignment, their last reader, deletes it.
    monkeypatch.setattr(sharded_search, "_use_assigned_cpus", lambda: None)
    monkeypatch.setattr(sharded_search, "_where", dict)
    rows = clustered_rows(600, seed=3)
    (path,) = write_shards(rows, tmp_path / "shards", parts=1)
    folder = tmp_path / "work"
    folder.mkdir()
    info, sample = sharded_search.scan_shard(str(path), 0, 0.5, 0, str(folder))
    assert info["n"] == len(rows)  # the row of an unreadable image is left out
    path.unlink()  # from here on only the copy holds the rows
    fetched = sharded_search.fetch_rows(str(path), 0, str(folder), np.array([3, 7]))
    np.testing.assert_array_equal(fetched, rows[[3, 7]])
    quantizer = sharded_search.train_quantizer(8, 2, 0, sample)
    keep = np.ones(len(rows), dtype=bool)
    keep[5] = False  # a copy of an earlier row: not written
    sharded_search.assign_shard(str(path), 0, keep, 0, quantizer, 2, str(folder))
    written = np.concatenate([
        np.concatenate(sharded_search._load_region(str(folder), group, ("vectors",))["vectors"])
        for group in range(len(quantizer["regions"]))
    ])  # fmt: skip
    assert sorted(map(bytes, written)) == sorted(map(bytes, rows[keep]))
    assert not list(folder.glob("shard-*"))
    # Run again without the copy, it reads the shard, which is gone now: named in one line.
    with pytest.raises(ray_extract.DamagedShardError, match="000.parquet"):
        sharded_search.fetch_rows(str(path), 0, str(folder), np.array([3]))


def test_a_crowded_region_is_split(monkeypatch):
    monkeypatch.setattr(sharded_search, "_use_assigned_cpus", lambda: None)
    monkeypatch.setattr(sharded_search, "_where", dict)
    rng = np.random.default_rng(3)
    centres = rng.gamma(0.6, 4.0, (5, 16))
    sizes = [4000, 250, 250, 250, 250]  # one cluster holds 80 % of the rows
    sample = np.vstack(
        [c + rng.standard_normal((s, 16)) for c, s in zip(centres, sizes, strict=True)]
    )
    quantizer = sharded_search.train_quantizer(50, 5, 0, sample.astype(np.float32))
    regions = quantizer["regions"]
    home = faiss.knn(sample.astype(np.float32), regions, 1)[1][:, 0]
    shares = np.bincount(home, minlength=len(regions)) / len(sample)
    assert len(regions) > 5
    assert shares.max() <= sharded_search.REGION_SPLIT / 5
    # Every region has cells, and every cell one region.
    assert set(quantizer["cell_group"]) == set(range(len(regions)))


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


def test_rows_look_in_more_regions_as_there_are_more():
    probed = [sharded_search.regions_to_probe(n) for n in (1, 3, 5, 16, 50, 200)]
    assert probed == [1, 3, 4, 4, 8, 15]


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


def test_notebook_numbering_from_rows_left_in_the_shards(local_ray, tmp_path):
    """Notebook 04 on Ray: the flakes' rows stay in the shards, and the answer is the one the
    in-process path gives over the same listing (photos listed twice, copies by value)."""
    import pandas as pd

    from snowflake_tools import search

    rows = clustered_rows(1200, seed=2)
    folder = tmp_path / "shards"
    write_shards(rows, folder, parts=3)
    keys = ray_extract.read_shards(folder, ["sha256"]).column("sha256").to_pylist()
    rng = np.random.default_rng(0)
    listed = [*keys, *rng.choice(keys, 5)]  # five photos whose file is there twice
    listed = [listed[i] for i in rng.permutation(len(listed))]
    listing = pd.DataFrame({"file": [f"flake-{i}.png" for i in range(len(listed))],
                            "sha256": listed})  # fmt: skip
    in_memory = ray_extract.assemble(listing, folder)
    lazy = ray_extract.assemble(listing, folder, in_memory=False)
    assert lazy.files == in_memory.files and lazy.features.shape == in_memory.features.shape
    pd.testing.assert_frame_equal(lazy.skipped, in_memory.skipped)
    for wanted in ([5, 0, 5, 17], slice(None, 10), np.array([len(lazy.files) - 1])):
        np.testing.assert_array_equal(lazy.features[wanted], in_memory.features[wanted])
    np.testing.assert_array_equal(lazy.features[3], in_memory.features[3])
    np.testing.assert_array_equal(lazy.features.take([2, 1])[[1]], in_memory.features[[1]])
    beyond = ray_extract.ShardVectors(lazy.features.paths, [[0, 10**6]], [0], rows.shape[1])
    with pytest.raises(ValueError, match="000.parquet has fewer rows than when its flakes"):
        beyond[[0]]

    on_ray = sharded_search.rank_listing(lazy.features, tmp_path, TOP_N, look_alikes=5,
                                         progress=False)  # fmt: skip
    _, copies, distinct = search.distinct_rows(in_memory.features)
    for ours, theirs in zip(on_ray.copies, copies, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    local, _, _ = ann.rank_at_scale(in_memory.features, "flat", TOP_N)
    assert on_ray.certified.holds and same_certified_top(on_ray, local)

    def ranking(certified):
        neighbours = search.neighbours_per_row(copies, certified.nearest, certified.scores)
        return search.rank_uniqueness(neighbours, in_memory.files).head(TOP_N)

    ours, theirs = ranking(on_ray.certified), ranking(local.certified)
    pd.testing.assert_frame_equal(ours, theirs, rtol=1e-5)
    top_rows = [in_memory.files.index(name) for name in ours["file"]]
    pd.testing.assert_frame_equal(
        on_ray.look_alikes(top_rows),
        search.distinct_neighbours(in_memory.features, top_rows, 5),
        rtol=1e-5,
    )
