"""Uniqueness over rows that never sit in one process: the search and certificate on Ray.

Notebook 04 chooses this path above :data:`LOCAL_MAX_ROWS` rows (``SEARCH = "auto"``); it gives
the same certified top-N as ``ann.rank_at_scale`` (steps 4 and 5 explain the ideas), but every
step that touches the rows is a Ray task, so any node of a cluster can do it:

1. **Scan** each Parquet shard: a content hash per row (to find exact copies), a sample, and
   a ``.npy`` copy of its rows, which steps 2 and 4 read instead of the shard (decoding
   Parquet's lists of floats costs several times more than reading the same bytes).
2. **Copies**: rows with equal hashes are confirmed equal on their vectors; a copy's first row
   stays, the others leave the search (as ``search.group_copies`` does in one process).
3. **Train** once, on the sample: a two-level IVF quantizer. Coarse centroids split the space
   into regions of about :data:`GROUP_ROWS` rows (a region far larger is split again); each
   region gets its own IVF cells.
4. **Assign** each shard's distinct rows to their ``nprobe`` nearest cells (looking only in
   their nearest regions, :func:`regions_to_probe`, so the cost grows slower than the cells),
   and write each row's vector once, to its own region, as memory-mappable ``.npy`` files;
   every other region one of its cells lies in lists it as a visitor, pointing to that vector.
5. **Exchange** the visitors, a batch of regions at a time (as many as half the free disk
   holds): a task per shard reads the shard's rows in order and writes each region's visitors
   into a file of its own, so that every read of the search is in order too.
6. **Search** each region of the batch in one task (a region many rows visit, in parts of
   :data:`QUERY_ROWS` queries): every query (its own rows and visitors) against the region's
   rows in the cells it probes there, exactly (IVF-Flat, cell by cell, as
   ``ann.search_rows`` does). The driver keeps each row's nearest over the regions: real rows
   at exact distances, so scores over-estimate.
7. **Refine** the rows that could reach the top-N: each is searched again in a share of all
   cells (:data:`REFINE_CELL_SHARE`, its nearest ones, wherever they lie), first the
   :data:`REFINE_FIRST_ROWS` highest scores, then every row still above the top-N-th refined
   score. An isolated row's nearest row lies in its nearest few cells only when a good share
   of them is probed; refined, its score is nearly exact and the certificate need not re-score
   it (each exact candidate costs a pass over every row).
8. **Certify** as ``ann.certify_top``, with the exact step asked of every region: each returns,
   for each candidate, its nearest rows there; the driver keeps the nearest.

No process holds all rows: a task holds one shard or one region and its visitors; the driver
holds a few numbers per row (hash, scores, nearest). A region's tasks all run on one node, the
nodes taking regions in turn (:func:`region_placement`). IVF-PQ with fast scan would keep less in
memory, but on pooled-feature-like rows its 4-bit codes ranked the true nearest row among the
first 16 for only 11 % of rows (200,000 rows, 512 values; ``make bench-scale``), so IVF-Flat it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import resource
import shutil
import sys
import time
import uuid
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from snowflake_tools import ann, ray_extract, search

#: ``SEARCH = "auto"`` keeps the in-process search up to this many rows: 1,000,000 rows of 512
#: float32 values are 2 GiB, searched in 161 s on 2 cores; beyond, the rows go to Ray.
LOCAL_MAX_ROWS = 1_000_000
#: ``SEARCH`` values the notebook accepts.
SEARCH_PATHS = ("auto", "local", "ray")
#: Distinct rows per region (one search task): a task holds its region's own rows (400 MB of
#: 512-value rows) and its visitors (rows of other regions that probe its cells).
GROUP_ROWS = 200_000
#: Regions searched for each row's cells: its nearest few, not all of them (at least this many;
#: :func:`regions_to_probe` says how many).
GROUP_PROBE = 4
#: A region with more than this many times its share of the training sample is split.
REGION_SPLIT = 2
#: Times the regions are split again while one is still too large (k-means is no exact split).
REGION_SPLIT_ROUNDS = 3
#: Queries one search task reads at most (a region many rows visit is searched in parts):
#: 1,000,000 rows of 512 float32 values are 2 GB, beside the region's own rows.
QUERY_ROWS = 1_000_000
#: Cells each row probes in the search, half of ``ann.IVF_NPROBE``: the refine makes the
#: scores near the top nearly exact whatever the search found, so this sets the recall of the
#: other rows only. At 10,000,000 rows, 4 cells found the nearest row for 99.0 % of them and
#: 8 cells for 99.4 %, in 23.7 minutes against 31.8 (``make bench-scale``, 2 cores).
NPROBE = 4
#: Share of all cells a refined row probes (its nearest): on 200,000 rows like the benchmark's,
#: the rows with the largest exact scores found their nearest row probing 3.6 % of the cells
#: for 90 % of them, 14 % for all of them; typical rows, 99.4 % at 0.4 %.
REFINE_CELL_SHARE = 0.125
#: Rows with the highest approximate scores refined first; the top-N-th of their refined
#: scores says which other rows are refined next (those above it).
REFINE_FIRST_ROWS = 1_000
#: Rows refined at most: a refined row costs a share of an exact one, and past this many the
#: certificate's doubling is left to sort out the rest.
REFINE_ROWS = 50_000
#: Share of the work folder's free disk one batch of regions' visitor files may fill: the
#: rest stays free for whatever else writes to that disk meanwhile.
VISITOR_DISK_SHARE = 0.5
#: Training rows per IVF cell, as in one process.
TRAIN_PER_CELL = ann.IVF_TRAIN_PER_CELL
#: k-means iterations of the training: the cells need not be optimal, only reasonable.
TRAIN_ITERATIONS = 10
#: Rows checked and hashed at a time while a shard is scanned (a block's copy, not the shard's).
HASH_BLOCK_ROWS = 65_536
#: Ray options of the tasks that hold a whole shard or the training sample, the run's largest
#: memory: each runs in a fresh worker process. A worker that goes on to the next task keeps
#: the memory the last one took, so a search after a shard's assignment would carry both. The
#: region tasks (search, certificate) reuse workers: a fresh one costs seconds to start, and
#: the certificate's many small tasks ran 3.6 times slower that way (``make bench-scale``).
SHARD_TASK_OPTIONS = {"max_calls": 1}


def choose_path(n_rows: int, search_path: str = "auto") -> str:
    """``"local"`` or ``"ray"`` for ``n_rows`` rows: ``"auto"`` is local up to LOCAL_MAX_ROWS."""
    if search_path not in SEARCH_PATHS:
        raise ValueError(
            f"SEARCH must be one of {', '.join(map(repr, SEARCH_PATHS))}, got {search_path!r}."
        )
    if search_path == "auto":
        return "local" if n_rows <= LOCAL_MAX_ROWS else "ray"
    return search_path


def count_rows(paths) -> int:
    """Rows in the Parquet shards, from their footers (nothing else is read).

    A shard that cannot be read raises ``ray_extract.DamagedShardError``, naming it.
    """
    total = 0
    for path in paths:
        try:
            total += pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowException, OSError) as error:
            raise ray_extract.DamagedShardError.reading(path, error) from error
    return total


def read_vectors(path: str | os.PathLike) -> np.ndarray:
    """The vectors of one shard's readable rows (``error`` empty), float32 ``(n, d)``.

    A shard that cannot be read, or holds values that are not finite, raises
    ``ray_extract.DamagedShardError``, naming it (the extraction's rule). The rows are not
    copied when every row is readable and the shard is one Parquet row group.
    """
    table = ray_extract.read_shard(path, ["vector", "error"])
    keep = pc.equal(table.column("error"), "").to_numpy(zero_copy_only=False)
    matrix = ray_extract.vector_matrix(table.column("vector"))
    if not keep.all():
        matrix = matrix[keep]
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    for start in range(0, len(matrix), HASH_BLOCK_ROWS):  # block by block: no second copy
        if not np.isfinite(matrix[start : start + HASH_BLOCK_ROWS]).all():
            raise ray_extract.DamagedShardError(Path(path), "values that are not finite numbers")
    return matrix


def row_hashes(vectors: np.ndarray) -> np.ndarray:
    """A 64-bit content hash per row; equal rows (``-0.0`` equal to ``0.0``) hash equal."""
    hashes = np.empty(len(vectors), dtype=np.uint64)
    for start in range(0, len(vectors), HASH_BLOCK_ROWS):  # a block at a time: little memory
        rows = np.ascontiguousarray(vectors[start : start + HASH_BLOCK_ROWS] + np.float32(0))
        hashes[start : start + len(rows)] = [  # + 0 above turns -0.0 into 0.0
            int.from_bytes(hashlib.blake2b(row, digest_size=8).digest(), "little") for row in rows
        ]
    return hashes


def _where() -> dict:
    """The Ray node running this task, and this process's peak memory so far."""
    import ray

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "peak_mib": peak_mib}  # fmt: skip


def _copy_of(folder: str, number: int) -> Path:
    """Where :func:`scan_shard` leaves shard ``number``'s readable rows as a ``.npy`` file."""
    return Path(folder) / f"shard-{number}.rows.npy"


def _shard_rows(path: str, number: int, folder: str) -> np.ndarray:
    """Shard ``number``'s readable rows, memory-mapped from the scan's copy; read from the
    shard itself when the copy is gone (a task run again after the assignment deleted it)."""
    try:
        return np.load(_copy_of(folder, number), mmap_mode="r")
    except FileNotFoundError:
        return read_vectors(path)


def scan_shard(path: str, number: int, sample_share: float, seed: int, folder: str):
    """Task: the shard's row hashes and a random sample of its rows (for the training).

    It also leaves the rows in ``folder`` as a ``.npy`` file (:func:`_copy_of`), which the
    copies and assignment steps read: decoding a Parquet shard of float lists takes several
    times longer than reading the same rows from a ``.npy`` file.
    """
    vectors = read_vectors(path)
    rng = np.random.default_rng([seed, len(vectors)])
    sample = vectors[np.flatnonzero(rng.random(len(vectors)) < sample_share)]
    _save(_copy_of(folder, number), vectors)
    return {"n": len(vectors), "hashes": row_hashes(vectors), **_where()}, sample


def fetch_rows(path: str, number: int, folder: str, positions: np.ndarray) -> np.ndarray:
    """Task: the vectors at ``positions`` among shard ``number``'s readable rows."""
    return np.asarray(_shard_rows(path, number, folder)[positions])


def _kmeans(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` k-means centroids of ``vectors`` (all of them when there are at most ``k``)."""
    if len(vectors) <= k:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    kmeans = faiss.Kmeans(
        vectors.shape[1], k, niter=TRAIN_ITERATIONS, seed=seed,
        max_points_per_centroid=TRAIN_PER_CELL, verbose=False,
    )  # fmt: skip
    kmeans.train(np.ascontiguousarray(vectors, dtype=np.float32))
    return kmeans.centroids


def _use_assigned_cpus() -> None:
    """Let FAISS run as many threads as Ray gave this task CPUs: no more, since Ray runs other
    tasks beside it, and no fewer (Ray's workers start with one, and are reused)."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    faiss.omp_set_num_threads(max(1, int(cpus)))


def train_quantizer(cells: int, groups: int, seed: int, *samples):
    """Task: the two-level quantizer from the scanned samples.

    Returns ``{"centroids", "cell_group", "regions"}``: the cells' centroids float32
    ``(cells', d)``, each cell's region, and the regions' own centroids (k-means of the sample,
    the rule that split it, so a row goes where sample rows like it went). A region holding more
    than :data:`REGION_SPLIT` times its share of the sample is split by k-means, so that no
    search task is many times another (k-means over clusters of different sizes makes regions
    of very different sizes). The only task of its phase, it takes every CPU of the smallest
    node.
    """
    _use_assigned_cpus()
    sample = np.concatenate(samples)
    tops = _kmeans(sample, groups, seed)
    home = faiss.knn(sample, tops, 1)[1][:, 0]
    target = len(sample) / groups  # a region's share of the sample
    for _ in range(REGION_SPLIT_ROUNDS):
        sizes = np.bincount(home, minlength=len(tops))
        if sizes.max() <= REGION_SPLIT * target:
            break
        tops = np.concatenate([
            _kmeans(sample[home == group], math.ceil(size / target), seed)
            if size > REGION_SPLIT * target else tops[group : group + 1]
            for group, size in enumerate(sizes)
        ])  # fmt: skip
        home = faiss.knn(sample, tops, 1)[1][:, 0]
    centroids, cell_group, regions = [], [], []
    for group in range(len(tops)):
        members = sample[home == group]
        if len(members):  # a region's cells in proportion to its share of the sample
            share = max(1, round(cells * len(members) / len(sample)))
            centroids.append(_kmeans(members, share, seed))
            cell_group.append(np.full(len(centroids[-1]), len(regions), dtype=np.int64))
            regions.append(tops[group])
    centroids, cell_group = np.concatenate(centroids), np.concatenate(cell_group)
    return {"centroids": centroids, "cell_group": cell_group, "regions": np.stack(regions),
            **_where()}  # fmt: skip


def region_placement(n_regions: int) -> list:
    """Per region, the node its tasks (search, refine, certificate) run on: the alive nodes in
    turn, each as often as it has CPUs (soft: a node that leaves hands its regions to others).

    ``"SPREAD"`` alone is a hint: a worker Ray has leased goes on with the next queued task of
    its kind, so a round of short tasks can all run on the node whose worker was ready first,
    the other idle. One node per region also reads a region's files on the same node in every
    phase, where its page cache may still hold them.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cpus = {node["NodeID"]: int(node["Resources"].get("CPU", 0))
            for node in ray.nodes() if node["Alive"]}  # fmt: skip
    turns = [node for turn in range(max(cpus.values(), default=0))
             for node in sorted(cpus) if cpus[node] > turn]  # fmt: skip
    if not turns:
        return ["SPREAD"] * n_regions
    return [NodeAffinitySchedulingStrategy(turns[group % len(turns)], soft=True)
            for group in range(n_regions)]  # fmt: skip


def regions_to_probe(n_regions: int) -> int:
    """How many nearest regions a row looks in for its cells: :data:`GROUP_PROBE`, and more
    as the regions grow in number (their square root), so that a row's nearest rows stay
    within reach when the space is cut finer."""
    return min(n_regions, max(GROUP_PROBE, math.ceil(math.sqrt(n_regions))))


def assign_cells(vectors: np.ndarray, quantizer: dict, nprobe: int):
    """Each row's ``nprobe`` nearest cells (nearest first), looking in its nearest regions.

    ``quantizer`` is :func:`train_quantizer`'s. Returns int64 ``(n, nprobe)`` cell numbers
    (``-1`` where fewer cells exist).
    """
    centroids, cell_group = quantizer["centroids"], quantizer["cell_group"]
    n_regions = len(quantizer["regions"])
    near_groups = faiss.knn(vectors, quantizer["regions"], regions_to_probe(n_regions))[1]
    heap = faiss.ResultHeap(len(vectors), nprobe)
    for group in range(n_regions):
        rows = np.flatnonzero((near_groups == group).any(axis=1))
        if not len(rows):
            continue
        cells = np.flatnonzero(cell_group == group)
        distances, found = faiss.knn(vectors[rows], centroids[cells], min(nprobe, len(cells)))
        pad = nprobe - found.shape[1]
        distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
        found = np.pad(np.where(found >= 0, cells[np.maximum(found, 0)], -1),
                       ((0, 0), (0, pad)), constant_values=-1)  # fmt: skip
        heap.add_result_subset(rows.astype(np.int64), distances, found)
    heap.finalize()
    return heap.I


def assign_shard(
    path: str, number: int, keep: np.ndarray, first_id: int, quantizer: dict, nprobe: int,
    folder: str,
):  # fmt: skip
    """Task: write a shard's distinct rows, region by region, as memory-mappable files.

    ``keep`` marks the shard's distinct rows; they get ids ``first_id, first_id + 1, ...``.
    Region ``g`` gets ``g-<shard>.vectors.npy``, the float32 rows whose own cell lies in it
    (each row is written once), and, for these rows and for the rows of other regions that
    probe one of its cells, ``.ids.npy`` (int64), ``.cells.npy`` (int64 ``(m, nprobe)``, own
    cell first; ``-1`` for cells of other regions), ``.home.npy`` (bool: the row's own region
    is this one) and ``.vector_at.npy`` (``(region, shard, position)`` of the row's vector).
    """
    _use_assigned_cpus()
    vectors = _shard_rows(path, number, folder)[keep]
    ids = first_id + np.arange(len(vectors), dtype=np.int64)
    cells = assign_cells(vectors, quantizer, nprobe)
    regions = np.where(cells >= 0, quantizer["cell_group"][np.maximum(cells, 0)], -1)
    own_region = regions[:, 0]
    position = np.empty(len(vectors), dtype=np.int64)  # each row's place in its region's file
    for group in np.unique(own_region):
        at_home = np.flatnonzero(own_region == group)
        position[at_home] = np.arange(len(at_home))
    written = {}
    for group in np.unique(regions[regions >= 0]):
        rows = np.flatnonzero((regions == group).any(axis=1))
        home = own_region[rows] == group
        vector_at = np.stack([own_region[rows], np.full(len(rows), number), position[rows]], 1)
        parts = {"vectors": vectors[rows[home]], "ids": ids[rows], "home": home,
                 "cells": np.where(regions[rows] == group, cells[rows], -1),
                 "vector_at": vector_at}  # fmt: skip
        for name, array in parts.items():
            _save(Path(folder) / f"{group}-{number}.{name}.npy", array)
        written[int(group)] = len(rows)
    home_rows = np.bincount(own_region, minlength=len(quantizer["regions"]))
    _copy_of(folder, number).unlink(missing_ok=True)  # its last reader: free the disk
    return {"written": written, "home_rows": home_rows, **_where()}


def _save(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to the ``.npy`` file ``path`` whole or not at all (a temporary file,
    then renamed)."""
    temporary = path.with_name(f".{path.name}")
    np.save(temporary, array)
    temporary.rename(path)


#: The files :func:`assign_shard` writes per region and shard.
REGION_PARTS = ("vectors", "ids", "cells", "home", "vector_at")


def _load_region(folder: str, group: int, names=REGION_PARTS, shards=None) -> dict:
    """A region's files ``names`` from every shard (or those in ``shards``), memory-mapped
    (read as used): per part, a list in shard order."""
    stems = sorted(Path(folder).glob(f"{group}-*.ids.npy"), key=_shard_number)
    parts = {name: [] for name in names}
    for stem in stems:
        if shards is not None and _shard_number(stem) not in shards:
            continue
        base = str(stem)[: -len(".ids.npy")]
        for name in parts:
            parts[name].append(np.load(f"{base}.{name}.npy", mmap_mode="r"))
    return parts


def _shard_number(path: Path) -> int:
    """The shard of a region file ``<region>-<shard>.<part>.npy``."""
    return int(path.name.split(".")[0].split("-")[1])


def batches_within(sizes, budget: float) -> list[list[int]]:
    """The positions of ``sizes`` in order, in batches whose sizes add up to at most
    ``budget`` (one larger than the budget makes a batch alone): regions whose visitor files
    fit on the disk together, a region's shards whose queries one task reads."""
    batches, size = [[]], 0
    for group, more in enumerate(sizes):
        if batches[-1] and size + more > budget:
            batches.append([])
            size = 0
        batches[-1].append(group)
        size += more
    return batches if batches[0] else []


def share_visitors(folder: str, number: int, groups: list[int]):
    """Task: write the visitors shard ``number`` sends to each region of ``groups``.

    A visitor's vector lies in its own region's file; this reads the shard's files whole, in
    order, and writes ``<region>-<shard>.visitors.npy``: the vectors of the region's visitors
    from this shard, in the order it lists them. The search then reads its queries in order
    too: read one by one from region files larger than memory, they are random reads, slower
    at 10,000,000 rows than everything else together (``docs/performance.md``).
    """
    sources = {}
    for group in groups:
        stem = Path(folder) / f"{group}-{number}"
        if not stem.with_name(f"{stem.name}.ids.npy").exists():
            continue  # none of the shard's rows probes this region
        home = np.load(f"{stem}.home.npy")
        vector_at = np.load(f"{stem}.vector_at.npy")[~home]
        width = np.load(f"{stem}.vectors.npy", mmap_mode="r").shape[1]
        visitors = np.empty((len(vector_at), width), dtype=np.float32)
        for source in np.unique(vector_at[:, 0]):
            if source not in sources:
                sources[source] = np.load(Path(folder) / f"{source}-{number}.vectors.npy")
            sent = vector_at[:, 0] == source
            visitors[sent] = sources[source][vector_at[sent, 2]]
        _save(Path(f"{stem}.visitors.npy"), visitors)
    return _where()


def _rows_by_cell(cells: np.ndarray):
    """A lookup ``cell -> rows that probe it`` (ascending) over a ``(rows, nprobe)`` table,
    sorted once rather than scanned once per cell."""
    rows, probes = np.nonzero(cells >= 0)
    probed = cells[rows, probes]
    order = np.argsort(probed, kind="stable")
    rows, probed = rows[order], probed[order]

    def probing(cell: int) -> np.ndarray:
        return rows[np.searchsorted(probed, cell) : np.searchsorted(probed, cell, side="right")]

    return probing


def search_region(folder: str, group: int, k: int, shards: list[int]):
    """Task: the queries a region lists from ``shards``, each against the region's rows in
    the cells it probes there.

    The queries are the region's own rows and its visitors (:func:`share_visitors`' files,
    written for its batch of regions before); a region many rows visit is searched in parts,
    a few shards' queries each (:data:`QUERY_ROWS`). Returns ``(ids, distances, labels)``:
    the queries and their ``k`` nearest rows among the region's own, exact squared L2 (labels
    are row ids).
    """
    _use_assigned_cpus()
    parts = _load_region(folder, group, ("ids", "cells", "home", "vectors", "visitors"), shards)
    ids, cells = np.concatenate(parts["ids"]), np.concatenate(parts["cells"])
    queries = np.empty((len(ids), parts["vectors"][0].shape[1]), dtype=np.float32)
    start = 0
    for own, visitors, at_home in zip(parts["vectors"], parts["visitors"], parts["home"],
                                      strict=True):  # fmt: skip
        block = queries[start : start + len(at_home)]
        block[at_home], block[~at_home] = own, visitors
        start += len(at_home)
    distances, labels = _search_cells(folder, group, queries, cells, k)
    return ids, distances, labels, _where()


def refine_region(folder: str, group: int, asking, vectors, cells, cell_group, k: int):
    """Task: the rows ``asking`` of ``vectors`` against the region's rows in those of their
    ``cells`` (each row's nearest cells, ``cell_group`` their regions) that lie in this
    region, as :func:`search_region` does. Returns ``(asking, distances, labels)``."""
    _use_assigned_cpus()
    mine = cells[asking]
    in_group = np.where(cell_group[mine] == group, mine, -1)
    queries = np.ascontiguousarray(vectors[asking])
    distances, labels = _search_cells(folder, group, queries, in_group, k)
    return asking, distances, labels, _where()


def _search_cells(folder: str, group: int, queries: np.ndarray, cells: np.ndarray, k: int):
    """Each query's ``k`` nearest among the region's own rows in the cells it probes (a row of
    ``cells``), cell by cell, exact squared L2: ``(distances, labels)``, labels row ids."""
    mine = _load_region(folder, group, ("vectors", "ids", "cells", "home"))
    own_vectors = np.concatenate(mine["vectors"])
    own_ids = np.concatenate(
        [ids[home] for ids, home in zip(mine["ids"], mine["home"], strict=True)]
    )
    own_cell = np.concatenate(
        [cells[home, 0] for cells, home in zip(mine["cells"], mine["home"], strict=True)]
    )
    heap = faiss.ResultHeap(len(queries), k)
    order = np.argsort(own_cell, kind="stable")
    cell_numbers, bounds = np.unique(own_cell[order], return_index=True)
    probing = _rows_by_cell(cells)
    for cell, start, stop in zip(cell_numbers, bounds, [*bounds[1:], len(order)], strict=True):
        data, asking = order[start:stop], probing(cell)
        if not len(asking):
            continue
        distances, found = faiss.knn(queries[asking], own_vectors[data], min(k, len(data)))
        pad = k - found.shape[1]
        distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
        found = np.pad(np.where(found >= 0, own_ids[data][np.maximum(found, 0)], -1),
                       ((0, 0), (0, pad)), constant_values=-1)  # fmt: skip
        heap.add_result_subset(asking.astype(np.int64), distances, found)
    heap.finalize()
    return heap.D, heap.I


def exact_region(folder: str, group: int, queries: np.ndarray, k: int):
    """Task: the ``k`` nearest rows of this region to each query vector, exact (brute force)."""
    _use_assigned_cpus()
    parts = _load_region(folder, group, ("vectors", "ids", "home"))
    distances = np.full((len(queries), k), np.inf, dtype=np.float32)
    labels = np.full((len(queries), k), -1, dtype=np.int64)
    for vectors, ids, home in zip(parts["vectors"], parts["ids"], parts["home"], strict=True):
        if not len(vectors):
            continue
        found_d, found = faiss.knn(queries, np.ascontiguousarray(vectors), min(k, len(vectors)))
        found = np.where(found >= 0, ids[home][np.maximum(found, 0)], -1)
        distances, labels = merge_nearest(distances, labels, found_d, found, k)
    return distances, labels, _where()


def fetch_region_rows(folder: str, group: int, wanted: np.ndarray):
    """Task: ``(ids, vectors)`` of the rows in ``wanted`` whose own region this is."""
    parts = _load_region(folder, group, ("vectors", "ids", "home"))
    found_ids, found_vectors = [], []
    for vectors, ids, home in zip(parts["vectors"], parts["ids"], parts["home"], strict=True):
        home_ids = np.asarray(ids[home])  # the file's vectors are its home rows', in order
        rows = np.flatnonzero(np.isin(home_ids, wanted))
        found_ids.append(home_ids[rows])
        found_vectors.append(np.asarray(vectors[rows]))
    width = parts["vectors"][0].shape[1] if parts["vectors"] else 0
    if not found_ids:
        return np.empty(0, np.int64), np.empty((0, width), np.float32)
    return np.concatenate(found_ids), np.concatenate(found_vectors)


def merge_nearest(distances, labels, more_distances, more_labels, k: int, once: bool = False):
    """Per row, the ``k`` nearest of two lists of neighbours (``-1`` labels sort last).

    ``once``: the lists may share neighbours (a row searched twice); each is kept once.
    """
    all_d = np.concatenate([distances, more_distances], axis=1)
    all_l = np.concatenate([labels, more_labels], axis=1)
    if once:
        by_label = np.argsort(all_l, axis=1, kind="stable")
        all_l, all_d = (np.take_along_axis(a, by_label, 1) for a in (all_l, all_d))
        all_l[:, 1:][all_l[:, 1:] == all_l[:, :-1]] = -1
    all_d = np.where(all_l >= 0, all_d, np.inf)
    order = np.argsort(all_d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_d, order, 1), np.take_along_axis(all_l, order, 1)


def _gather(futures: list, description: str, progress: bool) -> list:
    """``ray.get`` of ``futures`` in order, with a progress bar; a damaged shard in one line."""
    import ray

    pending = list(futures)
    with tqdm(total=len(futures), desc=description, disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
            try:
                ray.get(done)
            except ray.exceptions.RayTaskError as error:
                cause = error.cause if hasattr(error, "cause") else error
                if isinstance(cause, ray_extract.DamagedShardError):
                    raise ray_extract.DamagedShardError(cause.path, cause.reason) from None
                raise
    return ray.get(futures)


def _search_regions(
    remote, at_region, folder, listed, batches, n_distinct, k, progress, tasks, finished
):
    """Steps 5 and 6, a batch of regions at a time: each row's ``k`` nearest over the regions
    (``distances``, ``labels``). ``listed``: per shard and region, the rows the region lists
    from the shard. A batch's visitor files go once its regions are searched."""
    import ray

    distances = np.full((n_distinct, k), np.inf, dtype=np.float32)
    labels = np.full((n_distinct, k), -1, dtype=np.int64)
    tasks["exchange"], tasks["search"] = [], []
    seconds = {"exchange": 0.0, "search": 0.0, "merge": 0.0}
    parts = {}  # per region, the shards whose queries each of its search tasks reads
    for group in range(listed.shape[1]):
        shards = np.flatnonzero(listed[:, group])
        parts[group] = [
            shards[b].tolist() for b in batches_within(listed[shards, group], QUERY_ROWS)
        ]
    bar = tqdm(total=sum(map(len, parts.values())), desc="searching regions", disable=not progress)
    for number, batch in enumerate(batches, 1):
        started = time.perf_counter()
        shared = [remote["share"].remote(str(folder), shard, batch) for shard in range(len(listed))]
        tasks["exchange"] += _gather(shared, f"visitors, batch {number} of {len(batches)}",
                                     progress)  # fmt: skip
        seconds["exchange"] += time.perf_counter() - started
        started, merged = time.perf_counter(), seconds["merge"]
        # Only the pending tasks are referenced: a region's answer leaves the object store
        # (and this process) once merged, instead of all of them staying to the end.
        pending = [at_region("search", group).remote(str(folder), group, k, shards)
                   for group in batch for shards in parts[group]]  # fmt: skip
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ids, found_d, found, where = ray.get(done[0])
            merge_started = time.perf_counter()
            distances[ids], labels[ids] = merge_nearest(
                distances[ids], labels[ids], found_d, found, k
            )
            seconds["merge"] += time.perf_counter() - merge_started
            tasks["search"].append(where)
            bar.update(1)
            del done, ids, found_d, found
        seconds["search"] += time.perf_counter() - started - (seconds["merge"] - merged)
        for group in batch:
            for path in Path(folder).glob(f"{group}-*.visitors.npy"):
                path.unlink()
    bar.close()
    for phase, wall in seconds.items():
        finished(phase, wall)
    return distances, labels


def _refine(at_region, folder, quantizer, rows, vectors, distances, labels, nprobe, tasks):
    """Search ``rows`` (their ``vectors``) again in their ``nprobe`` nearest cells over all
    regions; returns their nearest, ``distances`` and ``labels`` merged with what was found.
    Real rows at exact distances again, so the scores stay upper bounds."""
    import ray

    cells = faiss.knn(vectors, quantizer["centroids"], nprobe)[1]
    regions = quantizer["cell_group"][cells]
    # Put once for all tasks: a row's nearest cells lie in most regions, and a copy of its
    # vector per region would fill Ray's object store (6 GB at 10,000,000 rows).
    shared = [ray.put(array) for array in (vectors, cells, quantizer["cell_group"])]
    futures = [
        at_region("refine", group).remote(str(folder), int(group),
                                          np.flatnonzero((regions == group).any(axis=1)),
                                          *shared, labels.shape[1])
        for group in np.unique(regions)
    ]  # fmt: skip
    tasks.setdefault("refine", [])
    for asking, found_d, found, where in _gather(futures, "refining the top", False):
        distances[asking], labels[asking] = merge_nearest(
            distances[asking], labels[asking], found_d, found, labels.shape[1], once=True
        )
        tasks["refine"].append(where)
    return distances, labels


def _refine_top(at_region, folder, quantizer, vectors_of, distances, labels, nearest, scores,
                top_n, nprobe, tasks) -> dict:  # fmt: skip
    """Refine the rows that could reach the top ``top_n`` (step 7), updating ``nearest`` and
    ``scores`` in place: first the :data:`REFINE_FIRST_ROWS` highest scores, then, round after
    round, every row whose score is still above the ``top_n``-th refined score, at most
    :data:`REFINE_ROWS` in all. Returns ``{"rows", "nprobe", "rounds"}``."""
    if not REFINE_ROWS:
        return {"rows": 0, "nprobe": nprobe, "rounds": 0}
    k_search = labels.shape[1]
    refined = np.zeros(len(scores), dtype=bool)
    ranked = np.nan_to_num(scores, nan=-np.inf)
    first = min(REFINE_ROWS, max(REFINE_FIRST_ROWS, 2 * top_n))
    todo = np.argsort(-ranked, kind="stable")[:first]
    rounds = 0
    while len(todo):
        rounds += 1
        found_d, found = _refine(at_region, folder, quantizer, todo, vectors_of(todo),
                                 distances[todo], labels[todo], nprobe, tasks)  # fmt: skip
        nearest[todo], scores[todo] = ann.scores_from_neighbours(todo, found_d, found, k_search - 1)
        refined[todo] = True
        ranked = np.nan_to_num(scores, nan=-np.inf)
        on_top = np.sort(ranked[refined])[::-1]
        estimate = on_top[min(top_n, len(on_top)) - 1]
        above = np.flatnonzero(~refined & (ranked > estimate))
        todo = above[np.argsort(-ranked[above], kind="stable")][: REFINE_ROWS - refined.sum()]
    return {"rows": int(refined.sum()), "nprobe": nprobe, "rounds": rounds}


@dataclasses.dataclass
class ShardedRanking:
    """What :func:`rank_sharded` returns.

    Attributes:
        certified: the ``ann.Certified`` record over the distinct rows (ids in shard order).
        approximate_nearest: each distinct row's nearest other before the certificate.
        distinct_rows: per distinct id, its row among all readable shard rows (shard order).
        copies_of: per distinct id, how many other rows are exact copies of it.
        distinct_of: per readable shard row (shard order), its distinct id.
        n_rows, n_distinct: readable rows, and rows left after merging copies.
        settings: ``{"kind": "ivf-sharded", "cells", "regions", "regions_probed", "nprobe",
            "region_rows", "visitor_batches", "queries_per_row", "refined"}`` (``region_rows``:
            smallest, median and largest region; ``visitor_batches``: how many batches of
            regions the search took; ``queries_per_row``: regions listing a row, on average;
            ``refined``: rows searched again before the certificate, in how many cells, in
            how many rounds).
        seconds: wall time per phase (scan, copies, train, assign, exchange, search, merge,
            refine, certify; recall: the exact search of the recall sample, when asked for).
        tasks: per phase, a list of ``{"node", "pid", "peak_mib"}`` of the tasks that ran it.
        shards: the shard paths, in the order their rows are numbered.
        recall_at_1: ``(recall, rows sampled)`` when asked for, else None.
        look_alikes: per top distinct id, ``(ids, distances)`` of its nearest distinct rows,
            exact, when asked for.
    """

    certified: ann.Certified
    approximate_nearest: np.ndarray
    distinct_rows: np.ndarray
    copies_of: np.ndarray
    distinct_of: np.ndarray
    n_rows: int
    n_distinct: int
    settings: dict
    seconds: dict
    tasks: dict
    shards: list
    recall_at_1: tuple | None = None
    look_alikes: dict = dataclasses.field(default_factory=dict)

    def search_seconds(self) -> float:
        """Wall time of the phases before the certificate (``certified.seconds``)."""
        return sum(wall for phase, wall in self.seconds.items()
                   if phase not in ("certify", "recall"))  # fmt: skip

    def record(self) -> dict:
        """The run.json entries: certificate, shards, where each phase ran, memory."""
        nodes = {phase: sorted({t["node"] for t in tasks}) for phase, tasks in self.tasks.items()}
        peaks = [t["peak_mib"] for tasks in self.tasks.values() for t in tasks]
        return {
            "search_path": "ray", "index": self.settings, "certified": self.certified.holds,
            "certificate_candidates": self.certified.candidates_checked,
            "certify_rounds": self.certified.rounds,
            "n_rows": self.n_rows, "n_distinct": self.n_distinct,
            "shards": [str(path) for path in self.shards], "nodes_by_phase": nodes,
            "seconds": self.seconds, "peak_task_memory_mib": max(peaks, default=0.0),
        }  # fmt: skip


def _find_copies(paths, counts, hashes, progress: bool, fetch, folder: str):
    """Which rows stay, and which earlier row each other one copies (confirmed on vectors).

    Returns ``(keep, copied)``: bool per row (False for a copy of an earlier row) and, per row
    that goes, the row it copies (in the order of ``np.flatnonzero(~keep)``).
    """
    keep = np.ones(len(hashes), dtype=bool)
    order = np.argsort(hashes, kind="stable")
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    suspects = np.unique(np.concatenate([order[same], order[same + 1]]))
    if not len(suspects):
        return keep, np.empty(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    shard_of = np.searchsorted(offsets, suspects, side="right") - 1
    futures = [
        fetch.remote(paths[s], int(s), folder, suspects[shard_of == s] - offsets[s])
        for s in np.unique(shard_of)
    ]
    vectors = np.concatenate(_gather(futures, "confirming copies", progress))
    # Rows are in global order, so each group's first row is its earliest: the one that stays.
    copies = search.group_copies(vectors)
    keep[suspects[copies.extra_rows]] = False
    return keep, suspects[copies.first_rows[copies.groups[copies.extra_rows]]]


def rank_sharded(
    shard_paths,
    work_dir: str | os.PathLike,
    top_n: int = 100,
    k_neighbours: int = 1,
    cells: int | None = None,
    nprobe: int | None = None,
    group_rows: int = GROUP_ROWS,
    seed: int = 0,
    progress: bool = True,
    recall_sample: int = 0,
    look_alikes: int = 0,
    on_phase=None,
) -> ShardedRanking:
    """Score every readable shard row by its nearest distinct rows, with a certified top-N.

    Ray must be running (``ray_extract.start_ray``). The rows are numbered in the order of
    ``shard_paths``, readable rows only, as ``ray_extract.read_shards`` would stack them.
    ``work_dir`` (on a cluster, a folder every node sees) receives a copy of each shard's
    rows until it is assigned, then the region files, and loses them when the run ends.
    ``cells`` and ``nprobe`` override the index (``ann.choose_index``'s cells and
    :data:`NPROBE` by default).
    ``recall_sample`` rows, drawn at random, are searched exactly too, for ``recall_at_1``.
    ``look_alikes``: how many nearest distinct rows each of the top-N (ties included) gets,
    exactly, in ``ShardedRanking.look_alikes`` (notebook 04 shows them beside each top flake).
    ``on_phase(phase, seconds)`` is called as each phase ends (a long run's log).
    """
    import ray

    paths = [str(path) for path in shard_paths]
    if not paths:
        raise ValueError("No shards to search: extract features first (notebook 04, step 1).")
    seconds, tasks = {}, {}

    def finished(phase: str, wall: float) -> None:
        seconds[phase] = wall
        if on_phase:
            on_phase(phase, wall)

    remote = {
        name: ray.remote(num_cpus=1, scheduling_strategy="SPREAD", **options)(function)
        for name, function, options in [
            ("fetch", fetch_rows, SHARD_TASK_OPTIONS), ("assign", assign_shard, SHARD_TASK_OPTIONS),
            ("share", share_visitors, {}), ("search", search_region, {}),
            ("exact", exact_region, {}), ("refine", refine_region, {}),
            ("rows", fetch_region_rows, {})]
    }  # fmt: skip

    started = time.perf_counter()
    n_listed = count_rows(paths)
    n_cells = cells or ann.choose_index(max(n_listed, 1), "ivf")["cells"]
    n_probe = min(n_cells, nprobe or NPROBE)
    share = min(1.0, TRAIN_PER_CELL * n_cells / max(n_listed, 1))
    scan = ray.remote(
        num_cpus=1, num_returns=2, scheduling_strategy="SPREAD", **SHARD_TASK_OPTIONS
    )(scan_shard)
    folder = Path(work_dir) / f".regions-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    try:
        scanned = [scan.remote(path, number, share, seed, str(folder))
                   for number, path in enumerate(paths)]  # fmt: skip
        infos = _gather([info for info, _ in scanned], "scanning shards", progress)
        tasks["scan"] = [{key: info[key] for key in ("node", "pid", "peak_mib")} for info in infos]
        counts = np.array([info["n"] for info in infos], dtype=np.int64)
        hashes = np.concatenate([info["hashes"] for info in infos])
        finished("scan", time.perf_counter() - started)

        started = time.perf_counter()
        keep, copied = _find_copies(paths, counts, hashes, progress, remote["fetch"], str(folder))
        del hashes
        distinct_rows = np.flatnonzero(keep)
        n_distinct = len(distinct_rows)
        copies_of = np.bincount(np.searchsorted(distinct_rows, copied), minlength=n_distinct)
        distinct_of = np.cumsum(keep) - 1
        distinct_of[~keep] = distinct_of[copied]
        finished("copies", time.perf_counter() - started)

        started = time.perf_counter()
        n_groups = max(1, math.ceil(n_distinct / group_rows))
        node_cpus = min(int(node["Resources"].get("CPU", 1)) for node in ray.nodes()
                        if node["Alive"])  # fmt: skip
        train = ray.remote(num_cpus=max(1, node_cpus), **SHARD_TASK_OPTIONS)(train_quantizer)
        quantizer = ray.get(train.remote(n_cells, n_groups, seed, *[s for _, s in scanned]))
        del scanned
        tasks["train"] = [{key: quantizer[key] for key in ("node", "pid", "peak_mib")}]
        n_regions = len(quantizer["regions"])
        settings = {"kind": "ivf-sharded", "cells": len(quantizer["centroids"]),
                    "regions": n_regions, "regions_probed": regions_to_probe(n_regions),
                    "nprobe": n_probe}  # fmt: skip
        placement = region_placement(n_regions)

        def at_region(name: str, group: int):
            """The task ``name`` for region ``group``, to run on that region's node."""
            return remote[name].options(scheduling_strategy=placement[group])

        finished("train", time.perf_counter() - started)

        started = time.perf_counter()
        quantizer_ref = ray.put({k: quantizer[k] for k in ("centroids", "cell_group", "regions")})
        offsets = np.concatenate([[0], np.cumsum(counts)])
        first_ids = np.concatenate([[0], np.cumsum(keep)])[offsets]  # each shard's first id
        futures = [
            remote["assign"].remote(path, number, keep[offsets[number] : offsets[number + 1]],
                                    int(first_ids[number]), quantizer_ref, n_probe, str(folder))
            for number, path in enumerate(paths)
        ]  # fmt: skip
        assigned = _gather(futures, "assigning cells", progress)
        tasks["assign"] = [{key: a[key] for key in ("node", "pid", "peak_mib")} for a in assigned]
        region_rows = np.sum([a["home_rows"] for a in assigned], axis=0)
        settings["region_rows"] = {"smallest": int(region_rows.min()),
                                   "median": int(np.median(region_rows)),
                                   "largest": int(region_rows.max())}  # fmt: skip
        finished("assign", time.perf_counter() - started)

        k_search = min(k_neighbours, n_distinct - 1) + 1
        listed = np.array([[a["written"].get(g, 0) for g in range(n_regions)]
                           for a in assigned])  # fmt: skip
        row_bytes = 4 * quantizer["centroids"].shape[1]
        batches = batches_within((listed.sum(axis=0) - region_rows) * row_bytes,
                                 shutil.disk_usage(folder).free * VISITOR_DISK_SHARE)  # fmt: skip
        settings["visitor_batches"] = len(batches)
        settings["queries_per_row"] = round(float(listed.sum() / max(n_distinct, 1)), 2)
        distances, labels = _search_regions(
            remote, at_region, folder, listed, batches, n_distinct, k_search, progress, tasks,
            finished,
        )  # fmt: skip
        rows = np.arange(n_distinct, dtype=np.int64)
        nearest, scores = ann.scores_from_neighbours(rows, distances, labels, k_search - 1)

        def vectors_of(wanted: np.ndarray) -> np.ndarray:
            """The vectors of distinct rows ``wanted``, in that order, from their regions."""
            wanted_ref = ray.put(np.asarray(wanted, dtype=np.int64))
            parts = ray.get([at_region("rows", g).remote(str(folder), g, wanted_ref)
                             for g in range(n_regions)])  # fmt: skip
            ids = np.concatenate([p[0] for p in parts])
            vectors = np.concatenate([p[1] for p in parts])[np.argsort(ids)]
            return np.ascontiguousarray(vectors[np.searchsorted(np.sort(ids), wanted)])

        started = time.perf_counter()
        trained = settings["cells"]
        refine_nprobe = min(trained, max(n_probe, math.ceil(REFINE_CELL_SHARE * trained)))
        settings["refined"] = _refine_top(
            at_region, folder, quantizer, vectors_of, distances, labels, nearest, scores, top_n,
            refine_nprobe, tasks,
        )  # fmt: skip
        del distances, labels
        finished("refine", time.perf_counter() - started)

        tasks["certify"] = []

        def exact_neighbours(candidates: np.ndarray, k: int):
            """Every region's ``k`` nearest rows to ``candidates``, merged, exact."""
            queries = ray.put(vectors_of(candidates))
            found_d = np.full((len(candidates), k), np.inf, dtype=np.float32)
            found = np.full((len(candidates), k), -1, dtype=np.int64)
            futures = [at_region("exact", g).remote(str(folder), g, queries, k)
                       for g in range(n_regions)]  # fmt: skip
            for more_d, more, where in _gather(futures, "certifying", progress):
                found_d, found = merge_nearest(found_d, found, more_d, more, k)
                tasks["certify"].append(where)
            return found_d, found

        def exact_knn(candidates: np.ndarray):
            """Exact scores of ``candidates`` (``ann.certify_top``'s exact step)."""
            if not len(candidates):
                return np.empty(0, np.int64), np.empty(0)
            found_d, found = exact_neighbours(candidates, k_search)
            return ann.scores_from_neighbours(candidates, found_d, found, k_search - 1)

        certified = ann.certify_top(None, nearest, scores, top_n, k_neighbours,
                                    exact_knn=exact_knn)  # fmt: skip
        finished("certify", certified.seconds)
        recall = None
        if recall_sample:  # as ann.recall_at_1: found when as near as the exact nearest
            started = time.perf_counter()
            rng = np.random.default_rng(seed)
            sample = np.sort(rng.choice(n_distinct, min(recall_sample, n_distinct), False))
            exact_scores = exact_knn(sample)[1]
            found = scores[sample] <= exact_scores * (1 + ann.FLOAT_SLACK)
            recall = (float(found.mean()), len(sample))
            finished("recall", time.perf_counter() - started)
        top_look_alikes = {}
        if look_alikes and n_distinct > 1:
            kth = np.sort(certified.scores[certified.exact_rows])[::-1][certified.top_n - 1]
            top = np.sort(certified.exact_rows[certified.scores[certified.exact_rows] >= kth])
            found_d, found = exact_neighbours(top, min(look_alikes + 1, n_distinct))
            for row, distances, labels in zip(top, found_d, found, strict=True):
                other = (labels >= 0) & (labels != row)  # the row itself is among its nearest
                top_look_alikes[int(row)] = (labels[other][:look_alikes],
                                             distances[other][:look_alikes])  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return ShardedRanking(
        certified=certified, approximate_nearest=nearest, distinct_rows=distinct_rows,
        copies_of=copies_of, distinct_of=distinct_of, n_rows=len(keep), n_distinct=n_distinct,
        settings=settings, seconds=seconds, tasks=tasks, shards=paths, recall_at_1=recall,
        look_alikes=top_look_alikes,
    )  # fmt: skip


@dataclasses.dataclass
class InListing:
    """A :class:`ShardedRanking` numbered as notebook 04 numbers its flakes (``files``' order).

    Attributes:
        copies: the exact copies among the flakes, as ``search.group_copies`` groups them.
        nearest: per distinct flake (copy group), its approximate nearest other group.
        certified: the ``ann.Certified`` record over the groups.
        sharded: the run it comes from.
        group_of_id, id_of_group: the sharded run's distinct ids and the groups, both ways.
    """

    copies: search.Copies
    nearest: np.ndarray
    certified: ann.Certified
    sharded: ShardedRanking
    group_of_id: np.ndarray
    id_of_group: np.ndarray

    def look_alikes(self, rows) -> pd.DataFrame:
        """The exact nearest distinct flakes of ``rows`` (rows of the top-N), as
        ``search.distinct_neighbours`` returns them: ``row, neighbour, order, distance``."""
        first_rows, found = self.copies.first_rows, []
        for row in rows:
            top_id = int(self.id_of_group[self.copies.groups[row]])
            ids, distances = self.sharded.look_alikes[top_id]
            for order, (other, distance) in enumerate(zip(ids, distances, strict=True), 1):
                neighbour = int(first_rows[self.group_of_id[other]])
                found.append((int(row), neighbour, order, float(distance)))
        return pd.DataFrame(found, columns=["row", "neighbour", "order", "distance"])


def in_listing_order(sharded: ShardedRanking, vectors: ray_extract.ShardVectors) -> InListing:
    """``sharded`` numbered as the in-process path numbers the flakes of ``vectors``.

    ``vectors`` (``ray_extract.assemble(..., in_memory=False).features``) says where each
    flake's row is; the shards must hold those rows and no others, as after notebook 04's
    extraction into a fresh ``RESULTS_DIR``.
    """
    shard_rows = vectors.readable_rows
    if [Path(path) for path in sharded.shards] != vectors.paths or (
        len(shard_rows) and shard_rows.max() >= len(sharded.distinct_of)
    ):
        raise ValueError(
            "The shards changed between listing the flakes and searching them: run notebook "
            "04 again from step 3."
        )
    ids = sharded.distinct_of[shard_rows]  # per flake, its sharded distinct id
    if len(np.unique(ids)) != sharded.n_distinct:
        raise ValueError(
            "The shards hold flakes that are not in the image folder (or lack some): the "
            "sharded search ranks every row of its shards. Use a fresh RESULTS_DIR."
        )
    # Groups numbered in order of their first flake, as search.group_copies numbers them.
    unique_ids, first_of_id = np.unique(ids, return_index=True)
    by_first = np.argsort(first_of_id)
    group_of_id = np.full(sharded.n_distinct, -1, dtype=np.int64)
    group_of_id[unique_ids[by_first]] = np.arange(len(unique_ids))
    first_rows = first_of_id[by_first]
    groups = group_of_id[ids]
    copies = search.Copies(
        groups, first_rows, np.setdiff1d(np.arange(len(ids)), first_rows, assume_unique=True)
    )
    id_of_group = unique_ids[by_first]

    def ours_of(nearest: np.ndarray) -> np.ndarray:
        return np.where(nearest >= 0, group_of_id[np.maximum(nearest, 0)], -1)

    certified = dataclasses.replace(
        sharded.certified,
        nearest=ours_of(sharded.certified.nearest[id_of_group]),
        scores=sharded.certified.scores[id_of_group],
        exact_rows=np.sort(group_of_id[sharded.certified.exact_rows]),
    )
    nearest = ours_of(sharded.approximate_nearest[id_of_group])
    return InListing(copies, nearest, certified, sharded, group_of_id, id_of_group)


def rank_listing(
    vectors: ray_extract.ShardVectors,
    work_dir: str | os.PathLike,
    top_n: int,
    k_neighbours: int = 1,
    recall_sample: int = 0,
    look_alikes: int = 0,
    progress: bool = True,
) -> InListing:
    """:func:`rank_sharded` over the shards behind ``vectors``, numbered as their flakes are."""
    shard_paths = vectors.paths
    sharded = rank_sharded(
        shard_paths, work_dir, top_n, k_neighbours, progress=progress,
        recall_sample=recall_sample, look_alikes=look_alikes,
    )  # fmt: skip
    return in_listing_order(sharded, vectors)
