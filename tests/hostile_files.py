"""Odd and hostile image files, written into a folder: what a real snowflake folder can hold."""

from __future__ import annotations

import struct
import zlib

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
