"""Finding and loading the snowflake images robustly (notebook 02, step 1).

Real folders hold surprises: upper-case endings, grayscale or palette GIFs, PNGs with
transparency, rotated phone photos, and now and then a file that is not an image at all. Every
image comes out of here as the same thing: an RGB float32 array of ``size x size`` pixels.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from snowflake_tools.files import is_image_name

#: Images with more pixels than this are refused before they are decoded, as unreadable: 50
#: megapixels (about 150 MB once decoded as RGB) is more than most cameras take, and a few KB of
#: compressed file can claim far more (a "decompression bomb") and take the machine's memory.
MAX_PIXELS = 50_000_000

_HOW_TO_FILL = "run 01_download_snowflakes.ipynb first (or point IMAGE_DIR at a folder of images)"


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded; the message says which file and why."""


def list_images(image_dir: str | os.PathLike, minimum: int = 1) -> list[Path]:
    """All image files below ``image_dir``, sorted by their path relative to it.

    Hidden files (a leading ``.``) are left out, so half-written downloads never show up.
    Raises FileNotFoundError for a missing folder and ValueError for fewer than ``minimum``
    images, each saying what to do instead.
    """
    folder = Path(image_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The image folder {folder.resolve()} does not exist: {_HOW_TO_FILL}."
        )
    paths = sorted(
        (
            path
            for path in folder.rglob("*")
            if path.is_file()
            and is_image_name(path.name)
            and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        ),
        key=lambda path: path.relative_to(folder).as_posix(),
    )
    if len(paths) < minimum:
        raise ValueError(
            f"Found {len(paths)} image(s) (.jpg, .jpeg, .png, .gif) in {folder.resolve()}, "
            f"need at least {minimum}: {_HOW_TO_FILL}."
        )
    return paths


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Any Pillow image as plain RGB: grayscale, palette, 16-bit and alpha images included.

    Transparent parts are laid on ``background`` (black, like the gallery's backgrounds) rather
    than left to whatever colour the file happens to store under them.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        span = max(pixels.max() - pixels.min(), 1.0)
        image = Image.fromarray(((pixels - pixels.min()) * 255.0 / span).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def border_colour(pixels: np.ndarray) -> np.ndarray:
    """Median colour of an RGB image's outermost ring of pixels: uint8 array of 3 values.

    Snowflake photos have a dark, fairly even background, so this is the colour to pad or fill
    with wherever an image needs pixels it does not have.
    """
    pixels = np.asarray(pixels)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0).astype(np.uint8)


class Placement(NamedTuple):
    """Where :func:`fit_square` puts a photo inside its ``size x size`` square, in pixels.

    The photo, ``width x height`` pixels as shown (after its EXIF turn), is resized to
    ``new_width x new_height`` and pasted with its top-left corner at ``(left, top)``.
    """

    width: int
    height: int
    size: int
    new_width: int
    new_height: int
    left: int
    top: int


def place_in_square(width: int, height: int, size: int) -> Placement:
    """How :func:`fit_square` scales and pads a ``width x height`` photo: one home for it.

    :func:`fit_square` uses it to make the square, :func:`cell_boxes` and
    :func:`square_extent` to map the square back onto the photo (notebook 05).
    """
    scale = size / max(width, height)
    new_width = max(1, round(width * scale))
    new_height = max(1, round(height * scale))
    return Placement(
        width,
        height,
        size,
        new_width,
        new_height,
        (size - new_width) // 2,
        (size - new_height) // 2,
    )


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Scale ``image`` so its longer side is ``size`` and pad it to a square.

    Squashing a photo to a square (what ``load_img(target_size=...)`` does) would turn a
    hexagon's 60-degree angles into something else; padding keeps the crystal's shape. The
    padding takes the median colour of the photo's border, so it blends into the background.
    """
    place = place_in_square(image.width, image.height, size)
    resized = image.resize((place.new_width, place.new_height), Image.Resampling.LANCZOS)
    fill = tuple(int(value) for value in border_colour(np.asarray(image)))
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, (place.left, place.top))
    return canvas


def square_extent(place: Placement) -> tuple[float, float, float, float]:
    """The square's edges in the photo's own pixel coordinates: ``(left, right, bottom, top)``.

    Pass it as matplotlib's ``imshow(..., extent=...)`` to lay a map computed on the square
    (such as a feature grid) over the photo as shown: the padding falls outside the photo.
    """
    scale_x = place.new_width / place.width
    scale_y = place.new_height / place.height
    return (
        -place.left / scale_x,
        (place.size - place.left) / scale_x,
        (place.size - place.top) / scale_y,
        -place.top / scale_y,
    )


def cell_boxes(place: Placement, grid: tuple[int, int]) -> pd.DataFrame:
    """The box in the photo's own pixels of every cell of a ``grid = (rows, columns)`` map.

    A feature map of a convolutional layer divides the square into ``rows x columns`` equal
    cells (block5_conv3 at 224 pixels: 14 x 14 cells of 16 pixels). Each cell's box is mapped
    back through the padding and the resize, then clipped to the photo. Returns one row per
    cell that covers some of the photo, with columns ``cell_row, cell_col, top, left, bottom,
    right`` (whole pixels, ``bottom`` and ``right`` exclusive); cells that lie entirely in the
    padding are left out.
    """
    rows, columns = grid
    left_edge, right_edge, bottom_edge, top_edge = square_extent(place)
    xs = np.linspace(left_edge, right_edge, columns + 1)
    ys = np.linspace(top_edge, bottom_edge, rows + 1)
    found = []
    for row in range(rows):
        top, bottom = max(ys[row], 0.0), min(ys[row + 1], place.height)
        for col in range(columns):
            left, right = max(xs[col], 0.0), min(xs[col + 1], place.width)
            if bottom - top > 1e-9 and right - left > 1e-9:
                found.append(
                    (
                        row,
                        col,
                        math.floor(top),
                        math.floor(left),
                        math.ceil(bottom),
                        math.ceil(right),
                    )
                )
    return pd.DataFrame(found, columns=["cell_row", "cell_col", "top", "left", "bottom", "right"])


def shown_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image as shown, after its EXIF turn, without decoding it."""
    with open_image(path) as image:
        width, height = image.size
        turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation: a quarter turn
    return (height, width) if turned else (width, height)


def check_pixel_count(image: Image.Image) -> None:
    """Raise ValueError if ``image`` (opened, not yet decoded) has more than MAX_PIXELS pixels."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ValueError(f"{width}x{height} pixels: {_too_many_pixels()}")


def _too_many_pixels() -> str:
    return (
        f"more than images.MAX_PIXELS = {MAX_PIXELS:,} pixels, refused before decoding "
        "(shrink the photo to use it)"
    )


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file without decoding it, refusing more than MAX_PIXELS pixels.

    Raises ValueError for too many pixels, OSError (including Pillow's UnidentifiedImageError)
    for a file that is missing or not an image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"{_too_many_pixels()} ({error})") from error
    try:
        check_pixel_count(image)
    except ValueError:
        image.close()
        raise
    return image


def load_image(path: str | os.PathLike, size: int = 224) -> np.ndarray:
    """Load one image as RGB pixels: float32 array of shape ``(size, size, 3)``, values 0-255.

    Only the first frame of an animated GIF is used. Raises :class:`UnreadableImageError` when
    the file cannot be decoded (missing, a folder, truncated, not an image, more than
    :data:`MAX_PIXELS` pixels, ...).
    """
    try:
        with open_image(path) as image:
            image.seek(0)
            image.load()
            square = fit_square(to_rgb(image), size)
    except (OSError, SyntaxError, ValueError) as error:  # OSError: not found, not an image...
        raise UnreadableImageError(f"{path}: cannot be read as an image ({error})") from error
    return np.asarray(square, dtype=np.float32)


def first_loadable(paths: Sequence[str | os.PathLike], size: int = 224) -> tuple[Path, np.ndarray]:
    """The first of ``paths`` that loads, and its pixels (:func:`load_image`).

    Files that cannot be read are passed over; if none loads, UnreadableImageError says so.
    """
    for path in paths:
        try:
            return Path(path), load_image(path, size)
        except UnreadableImageError:
            continue
    raise UnreadableImageError(
        f"None of the {len(paths)} image file(s) can be read as an image: {_HOW_TO_FILL}."
    )
