"""Listing and loading images: odd modes, odd names, bad files, empty folders."""

from __future__ import annotations

import resource

import numpy as np
import pytest
from helpers import write_hostile_folder, write_png_bomb
from PIL import Image

from snowflake_tools import images


def save(path, mode="RGB", size=(40, 30), **kwargs):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, **kwargs)
    return path


def test_list_images_sorted_any_case_and_skips_hidden_and_other_files(tmp_path):
    for name in ["b.JPG", "a.png", "c.jpeg", "d.Gif", "notes.txt", ".hidden.jpg", "x.jpg.part"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.png").write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in images.list_images(tmp_path)]
    assert names == ["a.png", "b.JPG", "c.jpeg", "d.Gif", "sub/e.png"]


def test_missing_folder_says_to_run_the_download_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_download_snowflakes.ipynb"):
        images.list_images(tmp_path / "nope")


def test_too_few_images_is_a_clear_error(tmp_path):
    save(tmp_path / "one.png")
    with pytest.raises(ValueError, match="Found 1 image.*at least 2.*01_download"):
        images.list_images(tmp_path, minimum=2)


@pytest.mark.parametrize(
    "name, mode, kwargs",
    [
        ("rgb.jpg", "RGB", {}),
        ("gray.png", "L", {}),
        ("palette.gif", "P", {}),
        ("alpha.png", "RGBA", {}),
        ("gray_alpha.png", "LA", {}),
        ("cmyk.jpg", "CMYK", {}),
        ("upper.JPEG", "RGB", {"format": "JPEG"}),
    ],
)
def test_load_image_gives_rgb_float_square(tmp_path, name, mode, kwargs):
    pixels = images.load_image(save(tmp_path / name, mode, **kwargs), size=32)
    assert pixels.shape == (32, 32, 3)
    assert pixels.dtype == np.float32
    assert 0 <= pixels.min() and pixels.max() <= 255


def test_transparent_parts_become_black(tmp_path):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert images.load_image(tmp_path / "clear.png", size=8).max() == 0


def test_fit_square_keeps_shape_by_padding():
    wide = Image.new("RGB", (100, 50), (10, 20, 30))
    wide.paste((255, 255, 255), (40, 0, 60, 50))
    square = np.asarray(images.fit_square(wide, 20))
    assert square.shape == (20, 20, 3)
    assert tuple(square[0, 0]) == (10, 20, 30)  # padding takes the border colour
    assert (square[10, 9:11] > 200).all()  # the white bar stays narrow and centred
    assert (square[10, 2] < 50).all()


@pytest.mark.parametrize("content", [b"<html>not an image</html>", b""])
def test_unreadable_files_raise_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(images.UnreadableImageError, match="broken.jpg"):
        images.load_image(path)


def test_truncated_image_is_unreadable(tmp_path):
    path = save(tmp_path / "full.jpg", size=(200, 200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(images.UnreadableImageError):
        images.load_image(path)


def test_a_pixel_bomb_is_refused_before_decoding(tmp_path):
    bomb = write_png_bomb(tmp_path / "bomb.png")  # 48 KB on disk, 400 megapixels
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(images.UnreadableImageError, match="bomb.png.*MAX_PIXELS"):
        images.load_image(bomb)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100  # decoding it would take 400 MB at least


def test_above_the_pixel_limit_but_below_pillows_own_is_refused_too(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    assert images.load_image(save(tmp_path / "ten.png", size=(10, 10)), 16).shape == (16, 16, 3)
    with pytest.raises(images.UnreadableImageError, match=r"11x10 pixels.*MAX_PIXELS = 100\b"):
        images.load_image(save(tmp_path / "eleven.png", size=(11, 10)))


def test_missing_files_and_folders_are_unreadable_images(tmp_path):
    (tmp_path / "folder.png").mkdir()
    for path in (tmp_path / "gone.png", tmp_path / "folder.png"):
        with pytest.raises(images.UnreadableImageError, match=path.name):
            images.load_image(path)


def test_sixteen_bit_and_animated_images_load(tmp_path):
    write_hostile_folder(tmp_path)
    for name in ("deep16.png", "animated.gif"):
        pixels = images.load_image(tmp_path / name, 32)
        assert pixels.shape == (32, 32, 3) and pixels.max() > pixels.min()


def test_first_loadable_passes_over_files_that_do_not_load(tmp_path):
    readable, unreadable = write_hostile_folder(tmp_path)
    path, pixels = images.first_loadable(images.list_images(tmp_path), 32)
    assert path.name == "animated.gif" and pixels.shape == (32, 32, 3)
    with pytest.raises(images.UnreadableImageError, match="None of the 4 image file"):
        images.first_loadable([tmp_path / name for name in unreadable])
