"""Checks for the values in a notebook's ``parameters`` cell, run before any work starts.

Every notebook calls these right after its parameters cell. A value that is not allowed
stops the notebook at once with one line that names the parameter, the value and what is
allowed, before a model is built, a folder is written or Ray is started.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

#: The convolutional layers of VGG16, in order: the layers a feature map can be cut at.
VGG16_CONV_LAYERS = tuple(
    f"block{block}_conv{conv}"
    for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for conv in range(1, convs + 1)
)
#: Its pooling layers: a feature map can be taken after them too (coarser, a quarter the size).
VGG16_POOL_LAYERS = tuple(f"block{block}_pool" for block in range(1, 6))
#: Every layer of VGG16 without its classifier whose output is a feature map.
VGG16_FEATURE_LAYERS = VGG16_CONV_LAYERS + VGG16_POOL_LAYERS
#: The smallest input side VGG16 accepts (five poolings halve it to 1 pixel).
MIN_IMAGE_SIZE = 32
#: Weights the notebooks accept besides the path of a weights file.
WEIGHTS_CHOICES = ("imagenet", "auto", None)


class ParameterError(ValueError):
    """A parameter value that is not allowed; the message names it and what is allowed.

    ``allowed`` holds the "what is allowed" part when the checks below raised it. In a
    notebook the error shows as its one line, without a traceback: the line says it all.
    """

    def __init__(self, message: str, allowed: str | None = None):
        super().__init__(message)
        self.allowed = allowed

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback (it looks this method up by name)."""
        return [f"{type(self).__name__}: {self}"]


def _fail(name: str, value: object, allowed: str) -> None:
    raise ParameterError(f"{name} = {value!r} is not allowed: {allowed}.", allowed)


def _check_within(
    name: str, value: object, kind: str, is_kind: bool, minimum: float | None, maximum: float | None
) -> None:
    """Fail, saying what is allowed, unless ``is_kind`` and ``minimum <= value <= maximum``."""
    bounds = [
        f"at least {minimum}" if minimum is not None else "",
        f"at most {maximum}" if maximum is not None else "",
    ]
    allowed = kind + (" " + " and ".join(b for b in bounds if b) if any(bounds) else "")
    if not is_kind:
        _fail(name, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        _fail(name, value, allowed)


def whole_number(
    name: str, value: object, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an int, when it is a whole number within ``[minimum, maximum]``."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    _check_within(name, value, "a whole number", is_int, minimum, maximum)
    return int(value)


def number(
    name: str, value: object, minimum: float | None = None, maximum: float | None = None
) -> float:
    """``value`` as a float, when it is a finite number within ``[minimum, maximum]``."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    _check_within(name, value, "a number", is_number, minimum, maximum)
    return float(value)


def one_of(name: str, value: object, allowed: Iterable[object]) -> object:
    """``value``, when it is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        _fail(name, value, "one of " + ", ".join(map(repr, allowed)))
    return value


def folder(name: str, value: object, must_exist: bool = True, filled_by: str | None = None) -> Path:
    """``value`` as a Path to a folder (that exists, when ``must_exist``).

    ``filled_by`` names the notebook that fills the folder, for the message when it is missing.
    """
    if not isinstance(value, str | os.PathLike) or not str(value):
        _fail(name, value, "a folder path")
    path = Path(value)
    if must_exist and not path.is_dir():
        _fail(
            name,
            value,
            f"a folder that exists (run {filled_by or 'the notebook that fills it'} first)",
        )
    if path.exists() and not path.is_dir():
        _fail(name, value, "a folder, not a file")
    return path


#: Stands for a parameter a notebook does not have (notebook 04 keeps no feature cache).
ABSENT = object()


def folders(image_dir: object, results_dir: object, cache_dir: object = ABSENT) -> None:
    """Check ``IMAGE_DIR`` (it must exist: notebook 01 fills it), ``RESULTS_DIR`` (made if
    missing) and, where the notebook has one, ``CACHE_DIR`` (None: inside ``RESULTS_DIR``)."""
    folder("IMAGE_DIR", image_dir, filled_by="01_download_snowflakes.ipynb")
    folder("RESULTS_DIR", results_dir, must_exist=False)
    if cache_dir is not ABSENT:
        optional(folder, "CACHE_DIR", cache_dir, must_exist=False)


def conv_layer(name: str, value: object) -> str:
    """``value``, when it names one of VGG16's convolutional layers."""
    return one_of(name, value, VGG16_CONV_LAYERS)


def feature_layer(name: str, value: object) -> str:
    """``value``, when it names a VGG16 layer whose output is a feature map (conv or pool)."""
    return one_of(name, value, VGG16_FEATURE_LAYERS)


def image_size(name: str, value: object) -> int:
    """``value``, when it is an image side VGG16 can take: :data:`MIN_IMAGE_SIZE` or more."""
    return whole_number(name, value, minimum=MIN_IMAGE_SIZE)


def flag(name: str, value: object) -> bool:
    """``value``, when it is True or False."""
    if not isinstance(value, bool):
        _fail(name, value, "True or False")
    return value


def weights(name: str, value: object) -> str | None:
    """``value``, when it is ``"imagenet"``, ``"auto"``, None or the path of a weights file."""
    allowed = '"imagenet", "auto", None, or the path of a weights file that exists'
    if value in WEIGHTS_CHOICES:
        return value
    if not isinstance(value, str | os.PathLike) or not Path(value).expanduser().is_file():
        _fail(name, value, allowed)
    return str(value)


def optional(check: Callable[..., object], name: str, value: object, *args, **kwargs):
    """None when ``value`` is None, else ``check(name, value, *args, **kwargs)``.

    The message of a refused value says that None is allowed too.
    """
    if value is None:
        return None
    try:
        return check(name, value, *args, **kwargs)
    except ParameterError as error:
        _fail(name, value, f"None, or {error.allowed}")


def web_address(name: str, value: object) -> str:
    """``value``, when it is an http(s) URL with a host (``https://example.org/page.html``)."""
    allowed = "an http:// or https:// address with a host, such as https://example.org/a.html"
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
        _ = parts and parts.port  # a port out of range or not a number raises here
    except ValueError:
        parts = None
    if not parts or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        _fail(name, value, allowed)
    return value


_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+:(\d{1,5})$|^\[[0-9A-Fa-f:.]+\]:(\d{1,5})$")


def ray_address(name: str, value: object) -> str | None:
    """``value``, when Ray can take it: None (start here), ``"auto"``, ``"host:port"`` or
    ``"ray://host:port"`` (an existing cluster)."""
    allowed = 'None (start Ray here), "auto", "host:port" or "ray://host:port"'
    if value is None or value == "auto":
        return value
    if not isinstance(value, str):
        _fail(name, value, allowed)
    address = value.removeprefix("ray://")
    match = _HOST_PORT.match(address)
    port = match and int(match.group(1) or match.group(2))
    if not port or port > 65535:
        _fail(name, value, allowed)
    return value


def angles(name: str, value: object, start_with_zero: bool = False) -> tuple[float, ...]:
    """``value`` as a tuple of turns in degrees: a list or tuple of numbers, none repeated.

    Without ``start_with_zero`` (turned copies of a photo) no angle may be a whole turn: that
    copy would be the photo itself. With it (the turns a method runs every image at) the list
    must start with 0, the image as it is.
    """
    if start_with_zero:
        allowed = "a list of angles in degrees that starts with 0, such as (0, 20, 40)"
    else:
        allowed = "a list of angles in degrees, none a whole turn (0, 360...), such as (30, 90)"
    if not isinstance(value, list | tuple):
        _fail(name, value, allowed)
    for angle in value:
        if (
            isinstance(angle, bool)
            or not isinstance(angle, int | float)
            or not math.isfinite(angle)
        ):
            _fail(name, value, allowed)
    turns = tuple(float(angle) for angle in value)
    if len(set(turns)) != len(turns):
        _fail(name, value, allowed + ", each once")
    whole = [turn for turn in turns[1 if start_with_zero else 0 :] if turn % 360 == 0]
    if (start_with_zero and (not turns or turns[0] != 0)) or whole:
        _fail(name, value, allowed)
    return turns


def clamp_top_n(top_n: int, n_distinct: int, name: str = "TOP_N") -> int:
    """``top_n``, or ``n_distinct`` when there are fewer distinct flakes, saying so.

    A ranking of ``n_distinct`` different flakes has no rank beyond that: the note says which
    value is used instead, so that no figure, table or certificate speaks of ranks that do not
    exist.
    """
    top_n = whole_number(name, top_n, minimum=1)
    if top_n <= n_distinct:
        return top_n
    flakes = "1 distinct flake" if n_distinct == 1 else f"{n_distinct} distinct flakes"
    shown = "it" if n_distinct == 1 else f"all {n_distinct}"
    print(f"{name} = {top_n} but only {flakes}: showing {shown} ({name} = {n_distinct}).")
    return n_distinct
