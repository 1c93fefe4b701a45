"""Feature extraction on Ray Data: one laptop or a cluster, the same code (notebook 04, step 3).

Each Ray actor builds the VGG16 extractor once and then runs the project's own
``images.load_image`` and ``features.run_model`` on batch after batch, so its features equal
``features.extract_features``' for the same settings. Rows ``(file, sha256, vector)`` land in
Parquet shards, each written whole or not at all; a re-run skips every file whose content
(SHA-256) is already in them, so an interrupted run loses only its unfinished shards, and exact
copies of a photo are extracted once.

Ray is imported only inside :func:`start_ray`, after the environment says how it may listen:
a local run binds to 127.0.0.1 and opens no port to the network, and its processes end with
the process that started them, however that ends.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from snowflake_tools import files, images, pooling, ray_watchdog

# ``features`` (TensorFlow) is imported where a model is built, not here: the hashing tasks
# import this module in fresh worker processes and would each pay seconds for TensorFlow.

#: Ray's switch that keeps a local instance on the loopback address (read when Ray is imported).
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Logical CPUs each extraction actor asks for. One per actor leaves a CPU for reading and
#: hashing files even on a 2-core laptop (with every CPU taken by actors Ray Data would wait).
ACTOR_CPUS = 1
#: Batches each actor works on at once: while one runs through the network (TensorFlow uses
#: every core for it), the next one is read and decoded, as a prefetching loader would.
CALLS_PER_ACTOR = 2
#: Rows per Ray Data block: several batches, so that work spreads over actors and nodes.
BATCHES_PER_BLOCK = 4
#: Seconds to wait for every extraction actor to start before giving up with an error (a
#: cluster without the CPUs for them would otherwise wait forever).
ACTOR_START_TIMEOUT_S = 600
#: Seconds a local Ray may take to start its node: twice Ray's own 30 s, for a laptop
#: busy with other work ("The current node timed out during startup").
START_WAIT_S = 60
#: Ray's settings for those waits, read as Ray starts (a value already set is kept): the node's
#: registration, the GCS port, and the agents' ports that the raylet waits for.
START_WAIT_SETTINGS = {
    "RAY_raylet_start_wait_time_s": str(START_WAIT_S),
    "RAY_gcs_server_port_wait_time_s": str(START_WAIT_S),
    "RAY_agent_register_timeout_ms": str(START_WAIT_S * 1000),
}
#: Shard columns, in order. ``node`` is the Ray node that extracted the row; ``started`` and
#: ``finished`` the wall-clock times (Unix seconds) of its batch, which show how long the
#: batches took apart from starting Ray and its actors.
COLUMNS = ("file", "sha256", "vector", "error", "node", "started", "finished")

_PACKAGE_DIR = Path(__file__).resolve().parent
#: Watchdogs of the local instances this process started (see :func:`_start_local_ray`).
_watchdogs: list[subprocess.Popen] = []
#: The address :func:`start_ray` last started or joined (``None``: the local instance).
_joined: dict = {}


def start_ray(address: str | None = None, num_cpus: int | None = None) -> dict:
    """Start Ray here (``address=None``) or connect to a cluster; return what is running.

    ``None`` starts a private local instance on 127.0.0.1 (never joining a cluster left over
    by an earlier run in ``/tmp/ray``), with at least 2 logical CPUs; see
    :func:`_start_local_ray` for how it survives a busy machine and a killed kernel.
    ``"auto"``, a ``host:port`` or a ``ray://host:port`` address joins an existing cluster and
    ships this package to its workers. Asked for another address than the one this process
    is already on (a changed ``RAY_ADDRESS`` run again in the same kernel), it stops with an
    error: Ray Data does not survive switching clusters within one process. Returns
    ``{"address_kind": "local" | "cluster", "nodes": n, "cpus": n}``.
    """
    if address is None:
        os.environ[LOOPBACK_SWITCH] = "0"  # before the import: Ray reads it once
        # Workers start from the raylet this process launches and inherit its environment.
        search_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(_PACKAGE_DIR.parent) not in search_path:
            os.environ["PYTHONPATH"] = os.pathsep.join([str(_PACKAGE_DIR.parent), *search_path])
        for name, value in START_WAIT_SETTINGS.items():
            os.environ.setdefault(name, value)
    import ray

    if address is None and getattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False):
        raise RuntimeError(
            f"Ray was imported before {LOOPBACK_SWITCH}=0 was set, so a local instance would "
            "listen on the network. Restart the kernel and call start_ray first."
        )
    if ray.is_initialized() and _joined and _joined["address"] != address:
        raise RuntimeError(
            f"Ray in this kernel is already on {_joined['address'] or 'a local instance'}; "
            f"restart the kernel to use {address or 'a local instance'} instead."
        )
    if not ray.is_initialized():
        _joined["address"] = address
        if address is None:
            _start_local_ray(num_cpus or max(2, os.cpu_count() or 1))
        else:
            ray.init(address=address, runtime_env={"py_modules": [str(_PACKAGE_DIR)]})
    nodes = [node for node in ray.nodes() if node["Alive"]]
    return {
        "address_kind": "local" if address is None else "cluster",
        "nodes": len(nodes),
        "cpus": int(ray.cluster_resources().get("CPU", 0)),
    }


def _start_local_ray(num_cpus: int) -> None:
    """Start the local instance, watched, and try once more when it fails to start.

    Every process of the instance carries a mark in its environment, and a watchdog
    (:mod:`snowflake_tools.ray_watchdog`) kills them all once this process stops Ray or dies,
    so a killed kernel leaves no Ray process behind. A start that fails (on a busy machine
    Ray's node may not register in time) is cleaned up the same way and tried once more.
    """
    import ray

    for attempt in (1, 2):
        token = uuid.uuid4().hex
        watchdog = subprocess.Popen(
            [sys.executable, str(_PACKAGE_DIR / "ray_watchdog.py"), token],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in a terminal reaches Ray's driver, not this
        )
        try:
            with _environment({ray_watchdog.MARK: token}):  # only what Ray starts now
                ray.init(
                    address="local",  # a fresh instance, whatever RAY_ADDRESS or /tmp/ray say
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                )
        except Exception as error:
            ray.shutdown()
            _stop_watchdog(watchdog)
            if attempt == 2:
                raise RuntimeError(
                    f"Ray did not start on this machine, twice ({error}). A machine busy with "
                    "other work is the usual cause: let it finish, or close some programs, and "
                    "run this cell again."
                ) from error
            print(f"Ray did not start ({error}); trying once more.")
        else:
            _watchdogs.append(watchdog)
            atexit.unregister(stop_ray)
            atexit.register(stop_ray)  # before Ray's own exit hook: agents and watchdog too
            return


@contextlib.contextmanager
def _environment(values: dict) -> Iterator[None]:
    """Set environment variables for the block only."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _stop_watchdog(watchdog: subprocess.Popen) -> None:
    """Close the watchdog's pipe: it kills what is left of its instance, then exits."""
    watchdog.stdin.close()
    watchdog.wait()


@contextlib.contextmanager
def _one_actor_per_node(pool_size: int) -> Iterator:
    """The extraction actors' scheduling strategy: each actor on its own node, while it can.

    Ray's ``"SPREAD"`` is a hint that a busy moment overrides (both actors of a two-node
    cluster were seen on one node, the other idle). A placement group with ``STRICT_SPREAD``
    reserves one actor's CPUs on each of ``pool_size`` different nodes, and each actor takes
    whichever reservation is free; the reservation ends with the extraction. More actors than
    nodes (``actors=`` given) spread as well as Ray can.
    """
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if pool_size > sum(node["Alive"] for node in ray.nodes()):
        yield "SPREAD"
        return
    group = placement_group([{"CPU": ACTOR_CPUS}] * pool_size, strategy="STRICT_SPREAD")
    try:
        ready, _ = ray.wait([group.ready()], timeout=ACTOR_START_TIMEOUT_S)
        if not ready:
            raise RuntimeError(
                f"Ray could not reserve {ACTOR_CPUS} CPU on each of {pool_size} nodes in "
                f"{ACTOR_START_TIMEOUT_S} s: some nodes are busy or gone. Give the run fewer "
                "actors, or wait for the cluster's other work to finish."
            )
        yield PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=-1)
    finally:
        remove_placement_group(group)


@contextlib.contextmanager
def _actor_pool_settings(pool_size: int) -> Iterator[None]:
    """Ray Data settings for the extraction, restored afterwards.

    The whole pool starts before the first batch, so that a quick first actor cannot take all
    the work and a node that cannot host an actor is an error, not a hang. Each actor runs on
    a node of its own (:func:`_one_actor_per_node`). Blocks go to the least busy actor rather
    than to one on the node that holds the block: a block holds file names only (each actor
    reads the pixels itself), and the driver's node holds every block, so "locality" would
    pile the work on that node whenever its actor keeps up.
    """
    import ray

    context = ray.data.DataContext.get_current()
    saved = (
        context.wait_for_min_actors_s,
        context.execution_options.actor_locality_enabled,
        context.scheduling_strategy,
    )

    def apply(wait_s: float, locality: bool, strategy) -> None:
        context.wait_for_min_actors_s = wait_s
        context.scheduling_strategy = strategy
        with warnings.catch_warnings():
            # Deprecated in Ray 2.60 ("removed after January 2027"); revisit when the pin moves.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.execution_options.actor_locality_enabled = locality

    with _one_actor_per_node(pool_size) as placement:
        apply(ACTOR_START_TIMEOUT_S, False, placement)
        try:
            yield
        finally:
            apply(*saved)


def stop_ray() -> None:
    """Shut down Ray (the local instance with everything it started, or the connection)."""
    import ray

    ray.shutdown()
    _joined.clear()
    while _watchdogs:
        _stop_watchdog(_watchdogs.pop())


class FeatureExtractor:
    """Ray Data callable class: built once per actor, then called on batch after batch.

    Args:
        model_settings: keyword arguments of ``features.load_vgg16`` (weights, image size, ...).
        layer: the VGG16 layer to cut at.
        feature_vector: ``"gap"`` or ``"flatten"`` (see ``pooling.pool``).
        expected_fingerprint: ``features.fingerprint`` of the driver's extractor; a worker
            whose model differs (another weights file, say) refuses to write anything.
        warm_up_batch: images in one blank batch run as the actor starts (0: none). The first
            batch of a fresh TensorFlow process pays for setting the model up (over a second
            here); paying it while the other actors start keeps it out of the real batches.
    """

    def __init__(
        self,
        model_settings: dict,
        layer: str,
        feature_vector: str,
        expected_fingerprint,
        warm_up_batch: int = 0,
    ):
        from snowflake_tools import features

        base, _ = features.load_vgg16(**model_settings)
        self.extractor = features.cut_at_layer(base, layer)
        if features.fingerprint(self.extractor) != expected_fingerprint:
            raise RuntimeError(
                "This Ray worker built a different model than the notebook (weights, layer or "
                "library versions differ): give every node the same weights file and packages."
            )
        self.image_size = int(self.extractor.input.shape[1])
        self.channels = int(self.extractor.output.shape[-1])
        self.feature_vector = feature_vector
        self.n_values = pooling.feature_size(tuple(self.extractor.output.shape[1:]), feature_vector)
        self.model_lock = threading.Lock()
        if warm_up_batch:
            blank = np.zeros((warm_up_batch, self.image_size, self.image_size, 3), np.float32)
            features.run_model(self.extractor, blank)

    def __call__(self, batch: dict) -> pa.Table:
        """Features of one batch of ``path, file, sha256`` rows, as a shard table."""
        import ray

        from snowflake_tools import features

        started = time.time()
        pixels, errors = [], []
        for path in batch["path"]:
            try:
                pixels.append(images.load_image(path, self.image_size))
                errors.append("")
            except images.UnreadableImageError as error:
                errors.append(str(error.__cause__ or error))
        vectors = np.zeros((len(errors), self.n_values), dtype=np.float32)
        loaded = np.array([error == "" for error in errors])
        if pixels:
            with self.model_lock:  # one batch in the network at a time; the next one decodes
                outputs = features.run_model(self.extractor, np.stack(pixels))
            vectors[loaded] = pooling.pool(outputs, self.channels, self.feature_vector)
        node = ray.get_runtime_context().get_node_id()
        timing = (started, time.time())
        return shard_table(batch["file"], batch["sha256"], vectors, errors, node, timing)


def shard_table(
    file, sha256, vectors: np.ndarray, errors, node: str, timing: tuple[float, float]
) -> pa.Table:
    """One shard's rows: ``vector`` is a fixed-size list of float32, readable without Ray.

    ``timing`` is ``(started, finished)`` of the batch, in Unix seconds (see :data:`COLUMNS`).
    """
    n = len(vectors)
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.table(
        {
            "file": pa.array([str(name) for name in file], pa.string()),
            "sha256": pa.array([str(key) for key in sha256], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            "error": pa.array(list(errors), pa.string()),
            "node": pa.array([node] * n, pa.string()),
            "started": pa.array([timing[0]] * n, pa.float64()),
            "finished": pa.array([timing[1]] * n, pa.float64()),
        }
    )


def hash_files(batch: dict) -> dict:
    """Ray Data task: add the SHA-256 of every file (``""`` when it cannot be read)."""
    keys = []
    for path in batch["path"]:
        try:
            keys.append(files.sha256_file(path))
        except OSError:
            keys.append("")
    return {**batch, "sha256": np.array(keys, dtype=object)}


def shard_folder(results_dir: str | os.PathLike, extractor, image_size: int, feature_vector: str):
    """``RESULTS_DIR/scale/features/<feature cache key>-<feature_vector>``: one folder per setting.

    The key is the feature cache's (:func:`features.cache_folder`: model, size, precision,
    weights), so features of other weights, layers, sizes, precisions or feature vectors live in
    other folders and a shard is never read for a model that did not write it.
    """
    from snowflake_tools import features

    folder = features.cache_folder(Path(results_dir) / "scale" / "features", extractor, image_size)
    return folder.with_name(f"{folder.name}-{feature_vector}")


class DamagedShardError(ValueError):
    """A shard that cannot be read (cut short by a crash or a full disk, say)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(
            f"The shard {path} is damaged ({reason}). Delete it and run the extraction again: "
            "its images are extracted anew."
        )

    @classmethod
    def reading(cls, path: str | os.PathLike, error: Exception) -> DamagedShardError:
        """The error for ``path``, whose reading failed with ``error`` (its first line)."""
        return cls(Path(path), str(error).splitlines()[0] if str(error) else type(error).__name__)

    def __reduce__(self):
        """Rebuilt from its path and reason (a Ray task raises it in another process)."""
        return type(self), (self.path, self.reason)


def read_shards(folder: str | os.PathLike, columns: Sequence[str] = COLUMNS) -> pa.Table:
    """All rows of the Parquet shards in ``folder`` (an empty table when there are none).

    A shard that cannot be read raises :class:`DamagedShardError`, naming it.
    """
    paths = sorted(Path(folder).glob("*.parquet"))
    if not paths:
        return pa.table({name: pa.array([], pa.string()) for name in columns if name != "vector"})
    return pa.concat_tables([read_shard(path, columns) for path in paths])


def read_shard(path: str | os.PathLike, columns: Sequence[str] = COLUMNS) -> pa.Table:
    """One shard's ``columns``; a damaged file is a one-line error that says what to do."""
    try:
        return pq.read_table(path, columns=list(columns))
    except (pa.ArrowException, OSError) as error:
        raise DamagedShardError.reading(path, error) from error


def clean_shard_folder(folder: str | os.PathLike) -> set[str]:
    """Prepare ``folder`` for a run; return the contents (SHA-256) its shards already hold.

    Removes what an interrupted run left and no run reads: temporary shards (``.*.part``) and
    temporary folders. A damaged shard is deleted, with one line naming it, so that its images
    are extracted again. Only run it when no other extraction writes into ``folder``.
    """
    folder = Path(folder)
    for leftover in folder.glob(".incomplete-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    files.remove_partial_files(folder)
    known: set[str] = set()
    for path in sorted(folder.glob("*.parquet")):
        try:
            known.update(read_shard(path, ["sha256"]).column("sha256").to_pylist())
        except DamagedShardError as error:
            print(
                f"The shard {path} is damaged ({error.reason}): deleted, its images are "
                "extracted again."
            )
            path.unlink()
    return known


@dataclasses.dataclass
class ShardRun:
    """What :func:`extract_to_shards` returns.

    Attributes:
        listing: DataFrame ``path, file, sha256`` of every image asked for.
        n_extracted: images run through the network in this run (copies count once).
        n_known: images whose content was already in the shards.
        work_by_node: rows written in this run per Ray node id.
        hash_seconds: wall time of listing and hashing the files.
        batch_seconds: from the start of the first batch to the end of the last: the
            extraction itself, without starting the actors (0 when nothing was extracted).
        seconds: wall time, hashing and starting the actors included.
    """

    listing: pd.DataFrame
    n_extracted: int
    n_known: int
    work_by_node: dict
    hash_seconds: float
    batch_seconds: float
    seconds: float


def _extraction_pipeline(chunks, extractor_args: dict, batch_size: int, pool_size: int):
    """The Ray Data pipeline: blocks of ``path, file, sha256`` rows → a pool of extractors."""
    import ray

    return ray.data.from_pandas(chunks).map_batches(
        FeatureExtractor,
        fn_constructor_kwargs={**extractor_args, "warm_up_batch": batch_size},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            size=pool_size,
            max_concurrent_calls_per_actor=CALLS_PER_ACTOR,
            max_tasks_in_flight_per_actor=CALLS_PER_ACTOR,  # the rest waits for any actor
            enable_true_multi_threading=True,
        ),
        num_cpus=ACTOR_CPUS,
    )


def extract_to_shards(
    paths: Sequence[str | os.PathLike],
    image_dir: str | os.PathLike,
    folder: str | os.PathLike,
    extractor_args: dict,
    batch_size: int = 16,
    actors: int | None = None,
) -> ShardRun:
    """Hash every image on Ray, then extract the new contents on Ray actors into ``folder``.

    Args:
        paths: the image files (readable from every Ray node: a shared folder on a cluster).
        image_dir: the folder that ``file`` names are relative to.
        folder: the shard folder (see :func:`shard_folder`).
        extractor_args: keyword arguments of :class:`FeatureExtractor`.
        batch_size: images per forward pass.
        actors: extraction actors; default one per Ray node, spread over the nodes.

    Each block of rows becomes a shard as soon as it is done, written atomically (a temporary
    file renamed into place), so a run that is stopped half way keeps every finished shard and
    a re-run extracts only the rest (:func:`clean_shard_folder` removes what it cannot use).
    A disk that fills up stops the run with :class:`files.DiskFullError`, saying how much the
    images still to extract need.
    """
    import ray

    started = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = [
        {"path": str(Path(path).resolve()), "file": Path(path).relative_to(image_dir).as_posix()}
        for path in paths
    ]
    blocks = max(1, math.ceil(len(items) / (batch_size * BATCHES_PER_BLOCK)))
    listing = (
        ray.data.from_items(items, override_num_blocks=blocks)
        .map_batches(hash_files, batch_format="numpy")
        .to_pandas()
    )
    listing = listing.set_index("file").loc[[item["file"] for item in items]].reset_index()
    hash_seconds = time.perf_counter() - started
    known = clean_shard_folder(folder)
    readable = listing["sha256"] != ""  # "" = the file itself could not be opened
    todo = listing[readable & ~listing["sha256"].isin(known)].drop_duplicates("sha256")
    work_by_node: dict = {}
    batch_seconds = 0.0
    if len(todo):
        pool_size = actors or sum(node["Alive"] for node in ray.nodes())
        # At least two blocks per actor, so that no actor (and no node) sits idle; Ray Data
        # bundles blocks up to a batch, so a small set also needs smaller batches.
        blocks = max(2 * pool_size, math.ceil(len(todo) / (batch_size * BATCHES_PER_BLOCK)))
        blocks = min(len(todo), blocks)
        batch_size = max(1, min(batch_size, len(todo) // blocks))
        # Whole batches per block: a block's last, partial batch is a new input shape for
        # TensorFlow to set up, so only the very last block may have one.
        per_block = batch_size * math.ceil(len(todo) / (blocks * batch_size))
        chunks = [todo.iloc[start : start + per_block] for start in range(0, len(todo), per_block)]
        written = _ShardWriter(folder, len(todo))
        with _actor_pool_settings(pool_size):
            pipeline = _extraction_pipeline(chunks, extractor_args, batch_size, pool_size)
            shards = iter(pipeline.iter_batches(batch_size=None, batch_format="pyarrow"))
            try:
                for table in shards:
                    written.write(table)
            finally:
                shards.close()  # an interrupted run stops its pipeline too
        work_by_node, batch_seconds = written.work_by_node, written.batch_seconds()
    return ShardRun(
        listing=listing[["path", "file", "sha256"]],
        n_extracted=len(todo),
        n_known=int(listing["sha256"].isin(known).sum()),
        work_by_node=work_by_node,
        hash_seconds=hash_seconds,
        batch_seconds=float(batch_seconds),
        seconds=time.perf_counter() - started,
    )


class _ShardWriter:
    """Writes the blocks of one extraction as shards and keeps count of their rows."""

    def __init__(self, folder: Path, n_rows: int):
        self.folder = folder
        self.rows_left = n_rows
        self.work_by_node: dict = {}
        self.times: list[float] = []

    def write(self, table: pa.Table) -> None:
        """Write one block as a new shard; check the room for all the rest at the first one."""
        needed = int(table.nbytes / max(1, table.num_rows) * self.rows_left)
        what = f"the shards of the {self.rows_left} images still to extract"
        if not self.times:  # the first block tells how large a row is
            files.check_free_space(self.folder, needed, what)
        with files.explain_full_disk(self.folder, needed, what):
            write_shard(table, self.folder)
        self.rows_left -= table.num_rows
        for node in table.column("node").to_pylist():
            self.work_by_node[node] = self.work_by_node.get(node, 0) + 1
        self.times += [
            min(table.column("started").to_pylist()),
            max(table.column("finished").to_pylist()),
        ]

    def batch_seconds(self) -> float:
        """From the start of the first batch to the end of the last."""
        return max(self.times) - min(self.times) if self.times else 0.0


def write_shard(table: pa.Table, folder: Path) -> Path:
    """Write ``table`` as a new shard in ``folder``, atomically: whole, or not at all."""
    path = folder / f"{uuid.uuid4().hex}.parquet"
    with files.atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return path


class ShardVectors:
    """The feature rows of some flakes where they stay, in Parquet shards.

    Indexing reads just the rows asked for, a shard at a time, in the order asked:
    ``vectors[rows]`` (a list or array of row numbers, or a slice) is a float32 matrix,
    ``vectors[row]`` one vector. ``take(rows)`` is a smaller ``ShardVectors``, still unread.
    So notebook 04 on Ray reads the rows it shows, never all of them.

    Attributes: ``paths``, the shards in order; ``places``, int64 ``(n, 2)``, each flake's
    shard (its number in ``paths``) and row there; ``readable_rows``, each flake's number
    among the readable rows of all shards in order (how ``sharded_search`` numbers rows).
    """

    def __init__(self, paths, places: np.ndarray, readable_rows: np.ndarray, width: int):
        self.paths = [Path(path) for path in paths]
        self.places = np.asarray(places, dtype=np.int64).reshape(-1, 2)
        self.readable_rows = np.asarray(readable_rows, dtype=np.int64)
        self.shape = (len(self.places), int(width))

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows) -> ShardVectors:
        """The rows ``rows`` (numbers or a slice), as a ``ShardVectors`` (nothing read)."""
        return ShardVectors(self.paths, self.places[rows], self.readable_rows[rows], self.shape[1])

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, int | np.integer):
            return self[[rows]][0]
        places = self.places[rows]
        matrix = np.empty((len(places), self.shape[1]), dtype=np.float32)
        for shard in np.unique(places[:, 0]):
            here = np.flatnonzero(places[:, 0] == shard)
            column = read_shard(self.paths[shard], ["vector"]).column("vector")
            if places[here, 1].max() >= len(column):
                raise ValueError(
                    f"{self.paths[shard]} has fewer rows than when its flakes were listed: "
                    "run notebook 04 again from step 3."
                )
            matrix[here] = vector_matrix(column.take(places[here, 1]))
        return matrix


def vector_matrix(column) -> np.ndarray:
    """A Parquet ``vector`` column (fixed-size lists of float32) as a float32 matrix."""
    vectors = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    width = vectors.type.list_size
    return vectors.values.to_numpy(zero_copy_only=False).reshape(len(vectors), width)


@dataclasses.dataclass
class Assembled:
    """What :func:`assemble` returns: the features of the images asked for.

    Attributes:
        features: rows in the order of ``files``: a float32 matrix ``(n_readable, n_values)``,
            or, with ``in_memory=False``, a :class:`ShardVectors` that reads rows when asked.
        files: image names relative to the image folder, one per row.
        skipped: DataFrame ``file, reason`` of images that could not be read.
    """

    features: np.ndarray | ShardVectors
    files: list[str]
    skipped: pd.DataFrame


def assemble(listing: pd.DataFrame, folder: str | os.PathLike, in_memory: bool = True) -> Assembled:
    """Look every listed image up in the shards by content; list the unreadable ones.

    ``in_memory=False`` reads no vector: the rows stay in the shards (:class:`ShardVectors`).
    """
    paths = sorted(Path(folder).glob("*.parquet"))
    table = read_shards(folder, ["sha256", "vector", "error"] if in_memory else ["sha256", "error"])
    row_of = {key: row for row, key in enumerate(table.column("sha256").to_pylist())}
    errors = table.column("error").to_pylist()
    keep, skipped = [], []
    for position, (file, key) in enumerate(zip(listing["file"], listing["sha256"], strict=True)):
        row = row_of.get(key)
        if row is None or errors[row]:
            reason = errors[row] if row is not None else "the file could not be read"
            skipped.append({"file": file, "reason": reason})
        else:
            keep.append((position, row))
    rows = np.array([row for _, row in keep], dtype=np.int64)
    if not in_memory:
        starts = np.cumsum([0, *(pq.ParquetFile(path).metadata.num_rows for path in paths)])
        shard = np.searchsorted(starts, rows, side="right") - 1
        readable_number = np.cumsum([error == "" for error in errors]) - 1
        features = ShardVectors(
            paths, np.stack([shard, rows - starts[shard]], axis=1), readable_number[rows],
            shard_width(folder),
        )  # fmt: skip
    elif len(table):
        features = np.ascontiguousarray(vector_matrix(table.column("vector"))[rows])
    else:
        features = np.empty((0, 0), dtype=np.float32)
    return Assembled(
        features=features,
        files=[listing["file"].iloc[position] for position, _ in keep],
        skipped=pd.DataFrame(skipped, columns=["file", "reason"]),
    )


def shard_width(folder: str | os.PathLike) -> int:
    """Values per vector in the shards of ``folder``, from a shard's schema (0 with none)."""
    for path in sorted(Path(folder).glob("*.parquet")):
        try:
            return pq.read_schema(path).field("vector").type.list_size
        except (pa.ArrowException, OSError) as error:
            raise DamagedShardError.reading(path, error) from error
    return 0
