"""What several test modules share (fixtures live in ``conftest.py``): odd and hostile files,
small image folders, gzip bombs, and checks of notebook runs, reports and rankings."""

from __future__ import annotations

import functools
import html
import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path, width=20_000, height=20_000):
    """A valid black 1-bit PNG of ``width x height`` pixels that takes a few dozen KB on disk.

    The pixel rows are compressed as they are made, so writing it needs little memory; decoding
    it as RGB would take ``3 * width * height`` bytes (1.2 GB at the default size).
    """
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    parts = [packer.compress(row * 1000) for _ in range(height // 1000)]
    parts += [packer.compress(row * (height % 1000)), packer.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
    return path


def random_pixels(seed, height=48, width=56):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def write_hostile_folder(folder):
    """Write good and bad images into ``folder``; return ``(readable, unreadable)`` file names.

    Unreadable: a zero-byte file that sorts first, text named ``.jpg``, a truncated JPEG and a
    pixel bomb. Readable, and each different: three plain PNGs, a CMYK JPEG, a 16-bit
    grayscale PNG and an animated GIF.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.fromarray(random_pixels(i)).save(folder / f"flake{i}.png")
    Image.fromarray(random_pixels(10)).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    deep = np.random.default_rng(11).integers(0, 65535, (40, 40), dtype=np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    frames = [Image.fromarray(random_pixels(20 + i)).convert("P") for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50)

    (folder / "0_empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"<html>404 Not Found</html>")
    Image.fromarray(random_pixels(30, 200, 200)).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    write_png_bomb(folder / "bomb.png")
    readable = ["animated.gif", "cmyk.jpg", "deep16.png", "flake0.png", "flake1.png", "flake2.png"]
    unreadable = ["0_empty.jpg", "bomb.png", "text.jpg", "truncated.jpg"]
    return readable, unreadable


#: Decoded size of the gzip bombs: far above every cap, a few hundred KiB on the wire.
BOMB_BYTES = 200 * 2**20


@functools.lru_cache(maxsize=2)
def gzip_bomb(n_bytes: int = BOMB_BYTES) -> bytes:
    """A gzip stream of ``n_bytes`` spaces (about ``n_bytes / 1000`` bytes compressed)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip framing
    block = b" " * 2**20
    parts = [compressor.compress(block) for _ in range(n_bytes // len(block))]
    return b"".join(parts) + compressor.flush()


#: File names matplotlib would read as maths or LaTeX if a figure did not draw them as written.
ODD_NAMES = [
    "cost_$x^$.png",
    "$\\alpha$ and $5.png",
    "a_b^c.png",
    "back\\slash.png",
    "{braces}_$.png",
    "$$.png",
    "100$.png",
    "x^{2}_$y$.jpg",
]


# --- Image folders and notebook runs ------------------------------------------------------------

#: Image side and layer of the Ray tests (block5_conv3 is then 2 x 2 x 512).
SIZE = 32
LAYER = "block5_conv3"


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


def make_folder(folder):
    """Twelve images with every awkward case notebook 02 must survive."""
    folder.mkdir()
    rng = np.random.default_rng(42)
    for i in range(8):
        pixels = rng.integers(0, 255, (48 + i, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"flake{i}.png")
    shutil.copy(folder / "flake0.png", folder / "copy_of_flake0.png")  # exact duplicate pair
    shutil.copy(folder / "flake0.png", folder / "another_copy.PNG")  # ... and a third copy
    Image.open(folder / "flake1.png").convert("L").save(folder / "GRAY.JPG", quality=95)
    Image.open(folder / "flake2.png").convert("P").save(folder / "palette.gif")
    (folder / "not_really.jpg").write_bytes(b"<html>404 Not Found</html>")
    return folder


def precision_used(record: dict) -> str:
    """The precision a run with PRECISION "auto" must end with, given its close calls."""
    from snowflake_tools import features  # here, so the tests without TensorFlow stay light

    chosen = features.resolve_precision(features.AUTO)
    assert record["precision_asked"] == features.AUTO
    return features.FLOAT32 if record["close_calls"] else chosen


def table_files(page):
    """The ``file`` column of the table's data, read from the page's Bokeh document."""
    found = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S)
    document = json.loads(html.unescape(found.group(1)))
    columns = []

    def walk(node):
        if isinstance(node, list):
            if len(node) == 2 and node[0] == "file" and isinstance(node[1], list):
                columns.append(node[1])
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for item in node.values():
                walk(item)

    walk(document)
    assert len(columns) == 1, "one shared data source holds the file names"
    return columns[0]


def rows_with_mutual_pairs() -> np.ndarray:
    """Random non-negative rows: a few dozen mutual pairs, some rounded apart by FAISS."""
    rng = np.random.default_rng(0)
    return np.maximum(rng.standard_normal((700, 512), dtype=np.float32), 0)


def assert_mutual_pairs_tie(nearest: np.ndarray, distance: np.ndarray) -> None:
    """Both flakes of every mutual pair carry exactly the same distance."""
    mutual = nearest[nearest] == np.arange(len(nearest))
    assert mutual.sum() > 10
    np.testing.assert_array_equal(distance[mutual], distance[nearest[mutual]])


# --- The sharded search ------------------------------------------------------------------------

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
    import pyarrow.parquet as pq

    from snowflake_tools import ray_extract

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


def same_certified_top(sharded, local, top_n: int = 20) -> bool:
    """Same certified top-N scores, rank by rank (ties may swap flakes)."""
    ours = np.sort(sharded.certified.scores)[::-1][:top_n]
    theirs = np.sort(local.certified.scores)[::-1][:top_n]
    return bool(np.allclose(ours, theirs, rtol=1e-5))


def listening_addresses(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets these processes listen on (``ss -ltnp``)."""
    output = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    return [
        line.split()[3]
        for line in output.splitlines()
        if {int(pid) for pid in re.findall(r"pid=(\d+)", line)} & pids
    ]
