"""Extraction on a local Ray: same features as extract_features, skips, re-runs, loopback only."""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports Ray

import errno
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from helpers import LAYER, LOOPBACK, SIZE, make_flakes
from PIL import Image

from snowflake_tools import ann, features, files, images, pooling, ray_extract

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
#: Seconds a killed driver's Ray processes may take to go (Ray alone leaves some for minutes).
CLEANUP_DEADLINE_S = 120


def descendants(pid: int) -> set[int]:
    """Process ids started, directly or not, by ``pid``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def sockets_of(pids: set[int], *ss_args: str) -> list[tuple[str, str]]:
    """``(local, peer)`` addresses of the TCP sockets ``ss`` lists for these processes."""
    output = subprocess.run(["ss", "-Htnp", *ss_args], capture_output=True, text=True).stdout
    found = []
    for line in output.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            columns = line.split()
            found.append((columns[3], columns[4]))
    return found


def start_driver() -> subprocess.Popen:
    """A Python process that starts a local Ray with ``start_ray`` and then waits."""
    # Ctrl-C raises KeyboardInterrupt, as in a terminal or a kernel, even when the tests run in
    # a background job (which starts its processes with SIGINT ignored).
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from snowflake_tools import ray_extract\n"
        "ray_extract.start_ray(None)\n"
        "print('started', flush=True)\n"
        "time.sleep(3600)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(NOTEBOOKS)},
    )


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (a zombie waits only to be reaped: it is gone)."""
    running = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.add(pid)
        except psutil.NoSuchProcess:
            continue
    return running


def listening_ports() -> set[str]:
    """Local addresses of every listening TCP socket on this machine."""
    output = subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout
    return {line.split()[3] for line in output.splitlines()}


# Ray's processes use SIGTERM for a graceful stop, and the kernel of a stopped notebook gets
# SIGKILL when it does not exit in time; Ctrl-C (SIGINT) ends a script through its exit hooks.
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=str)
def test_a_killed_driver_leaves_no_ray_process_or_listener(how):
    driver = start_driver()
    try:
        for line in driver.stdout:  # a busy machine may print a retry first
            if line.strip() == "started":
                break
        else:
            pytest.fail("the driver ended before Ray started")
        ray_pids = descendants(driver.pid)
        ports = {local for local, _ in sockets_of(ray_pids, "-l")}
        assert ports, "expected Ray processes listening"
        driver.send_signal(how)
        driver.wait(timeout=CLEANUP_DEADLINE_S)  # a driver that ignored the signal fails here
        deadline = time.monotonic() + CLEANUP_DEADLINE_S
        while (alive(ray_pids) or ports & listening_ports()) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = {pid: psutil.Process(pid).cmdline()[:3] for pid in alive(ray_pids)}
        assert not left, left
        assert not ports & listening_ports()
    finally:
        driver.kill()
        driver.wait()


@pytest.fixture(scope="module")
def local_ray():
    info = ray_extract.start_ray(None)
    yield info
    ray_extract.stop_ray()


@pytest.fixture(scope="module")
def extractor():
    base, _ = features.load_vgg16(None, SIZE)
    return features.cut_at_layer(base, LAYER)


def run_extraction(image_dir, results, extractor, feature_vector):
    folder = ray_extract.shard_folder(results, extractor, SIZE, feature_vector)
    arguments = dict(
        model_settings={"weights": None, "image_size": SIZE},
        layer=LAYER,
        feature_vector=feature_vector,
        expected_fingerprint=features.fingerprint(extractor),
    )
    paths = images.list_images(image_dir)
    run = ray_extract.extract_to_shards(paths, image_dir, folder, arguments, batch_size=3)
    return run, ray_extract.assemble(run.listing, folder)


def test_the_float32_rerun_on_ray_ranks_as_in_process(local_ray, tmp_path):
    """Notebook 04's re-run in float32 (``ann.rank_with_ray``) takes the run's search path: on
    Ray its rows stay in the shards, and it ranks as in this process (every flake certified)."""
    image_dir = make_flakes(tmp_path / "flakes", n=12)
    model = {"weights": None, "image_size": SIZE}
    common = (images.list_images(image_dir), image_dir, tmp_path / "results", model, LAYER,
              "gap", 4, "auto", 13, 1)  # fmt: skip
    local = ann.rank_with_ray(*common, "local", {}, features.FLOAT32)
    options = {"recall_sample": 5, "look_alikes": 3, "progress": False}
    on_ray = ann.rank_with_ray(*common, "ray", options, features.FLOAT32)
    pd.testing.assert_frame_equal(on_ray.ranking, local.ranking, rtol=1e-5)
    assert isinstance(on_ray.distinct, ray_extract.ShardVectors) and local.on_ray is None
    np.testing.assert_allclose(on_ray.distinct[:], local.distinct, rtol=1e-6)
    assert on_ray.certified.holds and on_ray.on_ray.sharded.recall_at_1[1] == 5


@pytest.mark.parametrize("feature_vector", ["flatten", "gap"])
def test_features_equal_extract_features(local_ray, extractor, tmp_path, feature_vector):
    image_dir = make_flakes(tmp_path / "flakes")
    run, assembled = run_extraction(image_dir, tmp_path / "results", extractor, feature_vector)

    reference = features.extract_features(extractor, images.list_images(image_dir), progress=False)
    expected = pooling.pool(reference.features, 512, feature_vector)
    assert assembled.files == [path.name for path in reference.paths]
    np.testing.assert_allclose(assembled.features, expected, rtol=1e-5, atol=1e-5)
    assert assembled.skipped["file"].tolist() == ["broken.jpg"]
    assert "cannot identify image file" in assembled.skipped["reason"].iloc[0]
    assert run.n_extracted == 8  # 9 files, the copy's content extracted once
    assert sum(run.work_by_node.values()) == 8
    assert 0 < run.batch_seconds < run.seconds - run.hash_seconds  # actors start before batches
    assert local_ray["address_kind"] == "local" and local_ray["nodes"] == 1

    # A re-run finds every content in the shards, a new image is the only work.
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(image_dir / "new.png")
    again, assembled_again = run_extraction(
        image_dir, tmp_path / "results", extractor, feature_vector
    )
    assert again.n_extracted == 1 and again.n_known == 9
    nothing_new, _ = run_extraction(image_dir, tmp_path / "results", extractor, feature_vector)
    assert nothing_new.n_extracted == 0 and nothing_new.batch_seconds == 0
    assert len(assembled_again.files) == 9
    shards = list(
        ray_extract.shard_folder(tmp_path / "results", extractor, SIZE, feature_vector).iterdir()
    )
    assert all(path.suffix == ".parquet" for path in shards)  # no leftover temporary folder


def test_local_ray_listens_and_talks_on_loopback_only(local_ray):
    ray_pids = descendants(os.getpid())
    listening = sockets_of(ray_pids, "-l")
    assert listening, "expected Ray processes listening"
    assert all(LOOPBACK.match(local) for local, _ in listening), listening
    connected = sockets_of(ray_pids)
    assert all(LOOPBACK.match(local) and LOOPBACK.match(peer) for local, peer in connected)


def test_stale_cluster_address_is_ignored(local_ray, monkeypatch):
    """A RAY_ADDRESS or /tmp/ray/ray_current_cluster left by a killed run is not joined."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing listens there
    ray_extract.stop_ray()
    try:
        info = ray_extract.start_ray(None)
        assert info["address_kind"] == "local" and info["nodes"] == 1
    finally:
        ray_extract.stop_ray()
        monkeypatch.delenv("RAY_ADDRESS")
        ray_extract.start_ray(None)  # the module fixture stops it


def test_another_address_in_the_same_kernel_is_refused(local_ray):
    """Joining a cluster after the local instance (or the reverse) asks for a fresh kernel."""
    with pytest.raises(RuntimeError, match="restart the kernel to use 127.0.0.1:1 instead"):
        ray_extract.start_ray("127.0.0.1:1")
    assert ray_extract.start_ray(None)["address_kind"] == "local"  # still the one running


def shard_rows(folder: Path) -> int:
    return sum(pq_rows(path) for path in folder.glob("*.parquet"))


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def test_a_run_stopped_by_a_full_disk_keeps_its_finished_shards(
    local_ray, extractor, tmp_path, monkeypatch
):
    """The first shard is written, the disk fills under the second: a re-run does the rest."""
    image_dir = make_flakes(tmp_path / "flakes")
    folder = ray_extract.shard_folder(tmp_path / "results", extractor, SIZE, "gap")
    real_write = ray_extract.pq.write_table
    calls = []

    def write_until_the_disk_is_full(table, where, **kwargs):
        calls.append(where)
        if len(calls) == 1:
            return real_write(table, where, **kwargs)
        Path(where).write_bytes(b"PAR1" + bytes(100))  # half a shard, then no room
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ray_extract.pq, "write_table", write_until_the_disk_is_full)
    with pytest.raises(files.DiskFullError) as caught:
        run_extraction(image_dir, tmp_path / "results", extractor, "gap")
    monkeypatch.undo()
    kept = shard_rows(folder)
    assert 0 < kept < 8  # one shard finished: 8 contents in two blocks
    message = str(caught.value)
    assert str(folder) in message and f"the {8 - kept} images still to extract" in message
    # what a killed run would leave besides: a temporary folder and a half-written shard
    (folder / ".incomplete-0123abcd").mkdir()
    (folder / ".incomplete-0123abcd" / "part.parquet").write_bytes(b"PAR1")
    (folder / f".{'0' * 32}.parquet.1a2b3c4d.part").write_bytes(b"PAR1")

    again, assembled = run_extraction(image_dir, tmp_path / "results", extractor, "gap")
    assert again.n_extracted == 8 - kept and again.n_known >= kept
    assert sorted(path.name for path in folder.iterdir() if not path.suffix == ".parquet") == []
    assert not any(path.name.startswith(".") for path in folder.iterdir())
    reference = features.extract_features(extractor, images.list_images(image_dir), progress=False)
    assert assembled.files == [path.name for path in reference.paths]
    expected = pooling.pool(reference.features, 512, "gap")
    np.testing.assert_allclose(assembled.features, expected, rtol=1e-5, atol=1e-5)


def test_a_damaged_shard_is_extracted_again_and_named(local_ray, extractor, tmp_path, capsys):
    image_dir = make_flakes(tmp_path / "flakes")
    first, expected = run_extraction(image_dir, tmp_path / "results", extractor, "gap")
    folder = ray_extract.shard_folder(tmp_path / "results", extractor, SIZE, "gap")
    damaged = sorted(folder.glob("*.parquet"))[0]
    rows = pq_rows(damaged)
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # cut short
    capsys.readouterr()

    again, assembled = run_extraction(image_dir, tmp_path / "results", extractor, "gap")
    said = [line for line in capsys.readouterr().out.splitlines() if str(damaged) in line]
    assert len(said) == 1 and "damaged" in said[0] and "extracted again" in said[0]
    assert again.n_extracted == rows and not damaged.exists()
    assert assembled.files == expected.files
    np.testing.assert_allclose(assembled.features, expected.features, rtol=1e-5, atol=1e-5)


def test_a_damaged_shard_in_the_way_of_assembly_is_one_clear_line(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    vectors = np.ones((2, 4), np.float32)
    table = ray_extract.shard_table(["a.png", "b.png"], ["1", "2"], vectors, ["", ""], "n", (0, 1))
    shard = ray_extract.write_shard(table, folder)
    listing = ray_extract.read_shards(folder, ["file", "sha256"]).to_pandas()
    shard.write_bytes(shard.read_bytes()[:-20])
    with pytest.raises(ray_extract.DamagedShardError, match=rf"{shard}.*Delete it"):
        ray_extract.assemble(listing, folder)


def test_the_watchdog_stops_only_its_marked_processes_when_its_pipe_closes():
    from snowflake_tools import ray_watchdog

    def sleeper(token: str) -> subprocess.Popen:
        env = {**os.environ, ray_watchdog.MARK: token}
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env)

    ours, other = sleeper("ours"), sleeper("other")
    watchdog = subprocess.Popen(
        [sys.executable, str(NOTEBOOKS / "snowflake_tools" / "ray_watchdog.py"), "ours"],
        stdin=subprocess.PIPE,
    )
    try:
        watchdog.stdin.close()  # as when the process that started Ray dies
        watchdog.wait()
        assert ours.wait() == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for process in (ours, other, watchdog):
            process.kill()
            process.wait()
