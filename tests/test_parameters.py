"""The checks every notebook runs on its parameters before any work."""

from __future__ import annotations

import math

import pytest

from snowflake_tools import parameters
from snowflake_tools.parameters import ParameterError


def refused(check, name, value, *args, **kwargs) -> str:
    """The one-line message ``check`` refuses ``value`` with."""
    with pytest.raises(ParameterError) as raised:
        check(name, value, *args, **kwargs)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{name} = {value!r} is not allowed: ")
    return message


@pytest.mark.parametrize("value", [0, -1, 2.5, "3", True, None, float("nan")])
def test_whole_number_refuses_what_is_not_a_whole_number_in_range(value):
    message = refused(parameters.whole_number, "TOP_N", value, minimum=1)
    assert message.endswith("a whole number at least 1.")


def test_whole_number_and_number_accept_values_in_range():
    assert parameters.whole_number("N", 5, minimum=1, maximum=5) == 5
    assert parameters.number("R", 0, minimum=0) == 0.0
    assert parameters.number("R", 1e9, minimum=0) == 1e9
    assert "at most 100" in refused(parameters.whole_number, "Q", 101, minimum=1, maximum=100)
    for value in (-0.1, float("nan"), "1", True, None):
        refused(parameters.number, "REQUEST_DELAY_S", value, minimum=0)


def test_one_of_lists_the_allowed_values():
    message = refused(parameters.one_of, "INDEX", "bogus", ("auto", "flat"))
    assert message.endswith("one of 'auto', 'flat'.")
    assert parameters.one_of("INDEX", "flat", ("auto", "flat")) == "flat"


def test_folder(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    assert parameters.folder("IMAGE_DIR", str(tmp_path)) == tmp_path
    assert parameters.folder("RESULTS_DIR", tmp_path / "new", must_exist=False) == tmp_path / "new"
    missing = refused(parameters.folder, "IMAGE_DIR", str(tmp_path / "no"), filled_by="01.ipynb")
    assert "run 01.ipynb first" in missing
    refused(parameters.folder, "RESULTS_DIR", str(tmp_path / "file.txt"), must_exist=False)
    refused(parameters.folder, "RESULTS_DIR", "", must_exist=False)
    refused(parameters.folder, "RESULTS_DIR", 3, must_exist=False)


def test_folders_checks_the_cache_only_where_a_notebook_has_one(tmp_path):
    parameters.folders(tmp_path, tmp_path / "results", None)
    parameters.folders(tmp_path, tmp_path / "results")  # notebook 04: no CACHE_DIR
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ParameterError, match=r"^CACHE_DIR = .* None, or a folder, not a file"):
        parameters.folders(tmp_path, tmp_path / "results", tmp_path / "file.txt")
    with pytest.raises(ParameterError, match=r"^IMAGE_DIR = .*\(run 01_download_snowflakes"):
        parameters.folders(tmp_path / "no", tmp_path / "results")


def test_layers_image_size_flag():
    assert parameters.feature_layer("LAYER", "block5_pool") == "block5_pool"
    assert parameters.conv_layer("LAYER", "block4_conv3") == "block4_conv3"
    assert "block5_conv3" in refused(parameters.feature_layer, "LAYER", "fc1")
    refused(parameters.conv_layer, "LAYER", "block5_pool")
    assert parameters.image_size("IMAGE_SIZE", 32) == 32
    assert "at least 32" in refused(parameters.image_size, "IMAGE_SIZE", 10)
    assert parameters.flag("MIRROR", False) is False
    assert "True or False" in refused(parameters.flag, "MIRROR", 1)


def test_weights(tmp_path):
    for value in ("imagenet", "auto", None):
        assert parameters.weights("WEIGHTS", value) == value
    weights_file = tmp_path / "w.h5"
    weights_file.write_bytes(b"")
    assert parameters.weights("WEIGHTS", str(weights_file)) == str(weights_file)
    assert "weights file" in refused(parameters.weights, "WEIGHTS", "imagnet")
    refused(parameters.weights, "WEIGHTS", 3)


def test_optional_says_none_is_allowed_too():
    assert parameters.optional(parameters.whole_number, "MAX_IMAGES", None, minimum=1) is None
    assert parameters.optional(parameters.whole_number, "MAX_IMAGES", 3, minimum=1) == 3
    with pytest.raises(ParameterError, match=r"^MAX_IMAGES = 0 is not allowed: None, or a whole"):
        parameters.optional(parameters.whole_number, "MAX_IMAGES", 0, minimum=1)


@pytest.mark.parametrize(
    "value", ["ftp://example.org/", "example.org/images.html", "http://", "https://h:99999/", 3]
)
def test_web_address_refuses(value):
    assert "http:// or https://" in refused(parameters.web_address, "BASE_URL", value)


def test_web_address_accepts():
    for value in ("https://www.ux1.eiu.edu/~cxtdm/met/snow/images.html", "http://127.0.0.1:8/a"):
        assert parameters.web_address("BASE_URL", value) == value


@pytest.mark.parametrize(
    "value", [None, "auto", "127.0.0.1:6379", "ray://head:10001", "ray://[::1]:10001"]
)
def test_ray_address_accepts(value):
    assert parameters.ray_address("RAY_ADDRESS", value) == value


@pytest.mark.parametrize("value", ["local", "ray://head", "head:port", "h:70000", 6379, ""])
def test_ray_address_refuses(value):
    assert "ray://host:port" in refused(parameters.ray_address, "RAY_ADDRESS", value)


def test_angles():
    assert parameters.angles("ANGLES", (30, 90.5)) == (30.0, 90.5)
    assert parameters.angles("ANGLES", ()) == ()
    assert parameters.angles("POOL_ANGLES", [0, 20], start_with_zero=True) == (0.0, 20.0)
    for value in [(360,), (0,), (30, 30), 30, ("30",), (True,), (math.inf,)]:
        refused(parameters.angles, "ANGLES", value)
    for value in [(), (20, 40), (0, 0), (0, 360)]:
        assert "starts with 0" in refused(parameters.angles, "POOL_ANGLES", value, True)


def test_the_error_shows_as_one_line_in_a_notebook():
    with pytest.raises(ParameterError) as raised:
        parameters.whole_number("BATCH_SIZE", 0, minimum=1)
    # IPython shows what _render_traceback_ returns instead of the traceback
    assert raised.value._render_traceback_() == [
        "ParameterError: BATCH_SIZE = 0 is not allowed: a whole number at least 1."
    ]
    assert isinstance(raised.value, ValueError)


def test_clamp_top_n_says_when_it_clamps(capsys):
    assert parameters.clamp_top_n(5, 40) == 5
    assert capsys.readouterr().out == ""
    assert parameters.clamp_top_n(1000, 40) == 40
    assert capsys.readouterr().out == (
        "TOP_N = 1000 but only 40 distinct flakes: showing all 40 (TOP_N = 40).\n"
    )
    assert parameters.clamp_top_n(3, 1) == 1
    assert "only 1 distinct flake: " in capsys.readouterr().out
    for value in (0, -1):
        with pytest.raises(ParameterError, match=f"TOP_N = {value} is not allowed"):
            parameters.clamp_top_n(value, 40)
