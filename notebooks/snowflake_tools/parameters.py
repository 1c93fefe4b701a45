"""Checks for the values in a notebook's ``parameters`` cell, run before any work starts.

Every notebook calls these right after its parameters cell. A value that is not allowed
stops the notebook at once with one line that names the parameter, the value and what is
allowed, before a model is built, a folder is written or Ray is started.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: The convolutional layers of VGG16, in order: the layers a feature map can be cut at.
VGG16_CONV_LAYERS = tuple(
    f"block{block}_conv{conv}"
    for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for conv in range(1, convs + 1)
)
#: The smallest input side VGG16 accepts (five poolings halve it to 1 pixel).
MIN_IMAGE_SIZE = 32


class ParameterError(ValueError):
    """A parameter value that is not allowed; the message names it and what is allowed."""


def _fail(name: str, value: object, allowed: str) -> None:
    raise ParameterError(f"{name} = {value!r} is not allowed: {allowed}.")


def whole_number(
    name: str, value: object, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an int, when it is a whole number within ``[minimum, maximum]``."""
    bounds = [
        f"at least {minimum}" if minimum is not None else "",
        f"at most {maximum}" if maximum is not None else "",
    ]
    allowed = "a whole number" + (" " + " and ".join(b for b in bounds if b) if any(bounds) else "")
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        _fail(name, value, allowed)
    return int(value)


def number(
    name: str, value: object, minimum: float | None = None, maximum: float | None = None
) -> float:
    """``value`` as a float, when it is a finite number within ``[minimum, maximum]``."""
    bounds = [
        f"at least {minimum}" if minimum is not None else "",
        f"at most {maximum}" if maximum is not None else "",
    ]
    allowed = "a number" + (" " + " and ".join(b for b in bounds if b) if any(bounds) else "")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        _fail(name, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        _fail(name, value, allowed)
    return float(value)


def one_of(name: str, value: object, allowed: Iterable[object]) -> object:
    """``value``, when it is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        _fail(name, value, "one of " + ", ".join(map(repr, allowed)))
    return value


def folder(name: str, value: object, must_exist: bool = True) -> Path:
    """``value`` as a Path to a folder (that exists, when ``must_exist``)."""
    if not isinstance(value, str | os.PathLike) or not str(value):
        _fail(name, value, "a folder path")
    path = Path(value)
    if must_exist and not path.is_dir():
        _fail(name, value, "a folder that exists (run the notebook that fills it first)")
    if path.exists() and not path.is_dir():
        _fail(name, value, "a folder, not a file")
    return path


def conv_layer(name: str, value: object) -> str:
    """``value``, when it names one of VGG16's convolutional layers."""
    return one_of(name, value, VGG16_CONV_LAYERS)
