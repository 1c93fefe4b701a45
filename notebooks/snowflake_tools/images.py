"""Finding and loading the snowflake images robustly (notebook 02, step 1).

Real folders hold surprises: upper-case endings, grayscale or palette GIFs, PNGs with
transparency, rotated phone photos, and now and then a file that is not an image at all. Every
image comes out of here as the same thing: an RGB float32 array of ``size x size`` pixels.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
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


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Scale ``image`` so its longer side is ``size`` and pad it to a square.

    Squashing a photo to a square (what ``load_img(target_size=...)`` does) would turn a
    hexagon's 60-degree angles into something else; padding keeps the crystal's shape. The
    padding takes the median colour of the photo's border, so it blends into the background.
    """
    scale = size / max(image.size)
    width = max(1, round(image.width * scale))
    height = max(1, round(image.height * scale))
    resized = image.resize((width, height), Image.Resampling.LANCZOS)
    fill = tuple(int(value) for value in border_colour(np.asarray(image)))
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - width) // 2, (size - height) // 2))
    return canvas


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
