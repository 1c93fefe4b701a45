"""Extraction on a local Ray: same features as extract_features, skips, re-runs, loopback only."""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports Ray

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snowflake_tools import features, images, pooling, ray_extract

pytestmark = pytest.mark.slow

SIZE = 32  # block5_conv3 is then 2 x 2 x 512
LAYER = "block5_conv3"
LOOPBACK = re.compile(r"^(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):\d+$")


def make_flakes(folder: Path, n: int = 7) -> Path:
    """``n`` small random images, a copy of the first, and one file that is not an image."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(n):
        pixels = rng.integers(0, 255, size=(40 + i, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"flake{i}.png")
    shutil.copy(folder / "flake0.png", folder / "copy_of_flake0.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


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


@pytest.fixture(scope="module")
def local_ray():
    info = ray_extract.start_ray(None)
    yield info
    ray_extract.stop_ray()


@pytest.fixture(scope="module")
def extractor():
    base, _ = features.load_vgg16(None, SIZE)
    return features.cut_at_layer(base, LAYER)


def run_extraction(image_dir, results, extractor, pooling_kind):
    folder = ray_extract.shard_folder(results, extractor, SIZE, pooling_kind)
    arguments = dict(
        model_settings={"weights": None, "image_size": SIZE},
        layer=LAYER,
        pooling_kind=pooling_kind,
        expected_fingerprint=features.fingerprint(extractor),
    )
    paths = images.list_images(image_dir)
    run = ray_extract.extract_to_shards(paths, image_dir, folder, arguments, batch_size=3)
    return run, ray_extract.assemble(run.listing, folder)


@pytest.mark.parametrize("pooling_kind", ["flatten", "gap"])
def test_features_equal_extract_features(local_ray, extractor, tmp_path, pooling_kind):
    image_dir = make_flakes(tmp_path / "flakes")
    run, assembled = run_extraction(image_dir, tmp_path / "results", extractor, pooling_kind)

    reference = features.extract_features(extractor, images.list_images(image_dir), progress=False)
    expected = pooling.pool(reference.features, 512, pooling_kind)
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
        image_dir, tmp_path / "results", extractor, pooling_kind
    )
    assert again.n_extracted == 1 and again.n_known == 9
    nothing_new, _ = run_extraction(image_dir, tmp_path / "results", extractor, pooling_kind)
    assert nothing_new.n_extracted == 0 and nothing_new.batch_seconds == 0
    assert len(assembled_again.files) == 9
    shards = list(
        ray_extract.shard_folder(tmp_path / "results", extractor, SIZE, pooling_kind).iterdir()
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
