"""Atomic writes: all or nothing, ordinary permissions, no leftovers."""

from __future__ import annotations

import errno
import os
import stat

import pandas as pd
import pytest

from snowflake_tools import files


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """``umask(value)`` sets the process umask for the test; the old one comes back after."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_files_get_the_permissions_of_an_ordinary_write(tmp_path, umask, mask):
    umask(mask)
    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")
    written = [
        files.atomic_write_bytes(tmp_path / "a.jpg", b"\xff\xd8"),
        files.atomic_write_text(tmp_path / "run.json", "{}"),
        files.atomic_write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv"),
    ]
    files.write_manifest(tmp_path, [])
    written.append(tmp_path / files.MANIFEST_NAME)
    with files.atomic_path(tmp_path / "figure.png") as temporary:
        temporary.write_bytes(b"png")  # how plots and the feature cache use it
    written.append(tmp_path / "figure.png")
    assert mode(ordinary) == 0o666 & ~mask
    for path in written:
        assert mode(path) == 0o666 & ~mask, path.name


def test_failed_block_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    target = files.atomic_write_text(tmp_path / "keep.txt", "old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["keep.txt"]


def test_remove_partial_files_deletes_only_leftovers(tmp_path):
    files.atomic_write_text(tmp_path / "kept.csv", "a\n")
    (tmp_path / ".flake.jpg.1a2b3c4d.part").write_bytes(b"half a photo")
    (tmp_path / "visible.part").write_bytes(b"not ours")  # not a hidden temporary
    removed = files.remove_partial_files(tmp_path)
    assert [path.name for path in removed] == [".flake.jpg.1a2b3c4d.part"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept.csv", "visible.part"]
    assert files.remove_partial_files(tmp_path / "missing") == []


def test_full_disk_is_explained_and_other_errors_pass_unchanged(tmp_path):
    folder = tmp_path / "not" / "made" / "yet"  # free space is that of the nearest parent
    with pytest.raises(files.DiskFullError, match=r"holding .*yet is full: 3 shards needs about"):
        with files.explain_full_disk(folder, 3 * 2**30, "3 shards"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError), files.explain_full_disk(folder, 1, "x"):
        raise PermissionError(errno.EACCES, "Permission denied")
    files.check_free_space(folder, 1, "one byte")  # room enough: nothing happens
    with pytest.raises(files.DiskFullError, match=r"needs about 1,073,741,824\.0 GiB"):
        files.check_free_space(folder, 2**60, "a big run")


def test_prepare_folders_creates_the_results_folder_and_defaults_the_cache(tmp_path):
    image_dir, results_dir, cache_dir = files.prepare_folders(
        str(tmp_path / "images"), str(tmp_path / "out" / "results")
    )
    assert image_dir == tmp_path / "images" and not image_dir.exists()
    assert results_dir.is_dir() and cache_dir == results_dir / files.CACHE_SUBFOLDER
    assert files.prepare_folders(image_dir, results_dir, tmp_path / "c")[2] == tmp_path / "c"
