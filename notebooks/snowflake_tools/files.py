"""Files on disk: atomic writes, safe names and the manifest of downloaded images.

Every writer here goes through a temporary file in the target folder and ``os.replace``, so a
crash or an interrupted kernel never leaves a half-written image, CSV or cache entry behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pandas as pd

#: File endings treated as images, compared in lower case (``.JPG`` counts).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif")

#: Name of the manifest that notebook 01 writes beside the images.
MANIFEST_NAME = "manifest.csv"

#: Columns of the manifest, in order: one row per saved image.
MANIFEST_COLUMNS = ["file", "url", "page", "sha256", "width", "height"]

#: Ending of the temporary files that atomic writes rename into place when they succeed.
PARTIAL_SUFFIX = ".part"

#: ``url`` and ``page`` of demo rows in the manifest mark them as synthetic (``demo``).
DEMO_PAGE = "demo:"

#: What numpy says when the disk fills under ``ndarray.tofile`` (it sets no errno).
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


class DiskFullError(OSError):
    """The disk has, or had, too little room: the message says where and how much is needed."""


def is_image_name(name: str) -> bool:
    """True when ``name`` ends in one of ``IMAGE_SUFFIXES``, in any letter case."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the identity of an image's content."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file lives in the same folder so that ``os.replace`` is atomic. On an
    exception it is removed and ``path`` keeps whatever it held before.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _create_partial_file(target)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _create_partial_file(target: Path) -> Path:
    """Create an empty, new ``.<name>.<random>.part`` beside ``target`` and return its path.

    Created with mode 0o666 minus the umask, as ``open(path, "w")`` would, so the finished file
    gets the permissions of any other file the user writes (``tempfile.mkstemp`` gives 0o600).
    """
    for _ in range(100):
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary
    raise FileExistsError(f"Cannot create a temporary file beside {target}.")


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary ``.*.part`` files an interrupted write left in ``folder``.

    Returns the paths removed. Only run it when no other writer is busy in ``folder``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    partial = sorted(folder.glob(f".*{PARTIAL_SUFFIX}"))
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def _size_text(n_bytes: float) -> str:
    """``n_bytes`` for people: ``"512 bytes"``, ``"3.4 MiB"``, ``"1.2 GiB"``."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:,.0f} {unit}" if unit == "bytes" else f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def _free_bytes(folder: Path) -> int:
    """Free bytes on the disk of ``folder`` (or of its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return shutil.disk_usage(Path.cwd()).free


def disk_full_error(folder: str | os.PathLike, needed: int, what: str) -> DiskFullError:
    """The error for ``what`` needing ``needed`` bytes in ``folder`` that are not free."""
    folder = Path(folder).resolve()
    return DiskFullError(
        errno.ENOSPC,
        f"The disk holding {folder} is full: {what} needs about {_size_text(needed)} there, "
        f"{_size_text(_free_bytes(folder))} is free. Free some space, or choose a folder on a "
        "disk with room, and run again.",
    )


def check_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Stop before any work when the disk of ``folder`` has less than ``needed`` bytes free."""
    if _free_bytes(Path(folder).resolve()) < needed:
        raise disk_full_error(folder, needed, what)


def is_disk_full(error: OSError) -> bool:
    """Whether ``error`` means the disk (or the user's quota) is full."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT) or bool(_SHORT_WRITE.search(str(error)))


@contextlib.contextmanager
def explain_full_disk(folder: str | os.PathLike, needed: int, what: str) -> Iterator[None]:
    """Turn a full disk inside the block into a :class:`DiskFullError` that says where and how
    much ``what`` needs; every other error passes unchanged."""
    try:
        yield
    except OSError as error:
        if isinstance(error, DiskFullError) or not is_disk_full(error):
            raise
        raise disk_full_error(folder, needed, what) from error


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (all or nothing) and return the path."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``frame`` as CSV (without the pandas index) atomically and return the path."""
    return atomic_write_text(path, frame.to_csv(index=False))


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str, default: str = "image", max_length: int = 80) -> str:
    """Turn any string (a URL's last segment, say) into a harmless file name.

    Folder parts are dropped, accents are folded to ASCII, anything but letters, digits,
    ``.``, ``_`` and ``-`` becomes ``_``, and leading dots go, so the result can never
    climb out of its folder (``../../etc/passwd`` becomes ``passwd``) nor hide itself.
    """
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    name = _UNSAFE.sub("_", name).strip("._-")
    if not name:
        return default
    if len(name) > max_length:
        stem, dot, suffix = name.rpartition(".")
        if dot and len(suffix) <= 5:
            name = stem[: max_length - len(suffix) - 1] + "." + suffix
        else:
            name = name[:max_length]
    return name


def unique_file_name(name: str, taken: Iterable[str], tag: str) -> str:
    """Return ``name``, or ``stem-<tag>.ext`` when ``name`` is already in ``taken``.

    ``taken`` is compared case-insensitively because some file systems are. ``tag`` (a few
    characters of the content hash, say) keeps the result stable from one run to the next.
    """
    taken_lower = {item.lower() for item in taken}
    if name.lower() not in taken_lower:
        return name
    stem, dot, suffix = name.rpartition(".")
    stem, suffix = (stem, "." + suffix) if dot else (name, "")
    candidate = f"{stem}-{tag}{suffix}"
    counter = 2
    while candidate.lower() in taken_lower:
        candidate = f"{stem}-{tag}-{counter}{suffix}"
        counter += 1
    return candidate


def read_manifest(image_dir: str | os.PathLike) -> pd.DataFrame:
    """The manifest of ``image_dir`` as a DataFrame; empty (with its columns) if there is none."""
    path = Path(image_dir) / MANIFEST_NAME
    if not path.exists():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    frame = pd.read_csv(path, dtype={"file": str, "url": str, "page": str, "sha256": str})
    missing = [column for column in MANIFEST_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} lacks the columns {missing}. Delete it and run "
            "01_download_snowflakes.ipynb again to rebuild it."
        )
    return frame[MANIFEST_COLUMNS]


def write_manifest(image_dir: str | os.PathLike, rows: Iterable[Mapping]) -> pd.DataFrame:
    """Write the manifest of ``image_dir`` atomically, sorted by file name, and return it."""
    frame = pd.DataFrame(list(rows), columns=MANIFEST_COLUMNS)
    frame = frame.sort_values("file", kind="stable").reset_index(drop=True)
    atomic_write_csv(frame, Path(image_dir) / MANIFEST_NAME)
    return frame


#: Where the feature cache goes, inside the results folder, when no cache folder is given.
CACHE_SUBFOLDER = "feature_cache"


def prepare_folders(
    image_dir: str | os.PathLike,
    results_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Path, Path, Path]:
    """``(image_dir, results_dir, cache_dir)`` as paths; the results folder is created.

    ``cache_dir`` None means ``results_dir / "feature_cache"``.
    """
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else results / CACHE_SUBFOLDER
    return Path(image_dir), results, cache
