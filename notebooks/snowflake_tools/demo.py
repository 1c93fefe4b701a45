"""Synthetic snow crystals for offline runs of the tutorial (notebook 01), tests and benchmarks.

When the snowflake gallery cannot be reached, notebook 01 fills the image folder with crystals
grown by a physical model instead, so notebook 02 still has something worth ranking.

The model is Reiter's local cellular automaton on a hexagonal grid (:func:`grow_crystal`):
vapour diffuses through the air and freezes where it first meets ice, so tips that stick out
grow fastest and branch in thin air, while plates grow where the background vapour is high.

Crystals come in morphology families (plates, sectored plates, stellar plates, stellar and
fern-like dendrites) with natural variation inside each family, plus a few singular ones (a
12-branched twin, a truncated triangle, a broken crystal, a capped column seen from the side) so
that the "most unique" analysis has something meaningful to find.

Reference: Reiter, C. A. (2005). A local cellular model for snow crystal growth. *Chaos, Solitons
& Fractals* 23(4):1111-1119.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from snowflake_tools import files

#: Regular families: many crystals each, alike within a family, clearly different between them.
REGULAR_FAMILIES = (
    "hexagonal_plate",
    "sectored_plate",
    "stellar_plate",
    "stellar_dendrite",
    "fernlike_dendrite",
)
#: Singular families: a single odd crystal each in a demo set, the ones worth finding.
SINGULAR_FAMILIES = ("twelve_branched", "triangular", "broken", "capped_column")
#: All family names that :func:`generate_crystal` accepts.
FAMILIES = REGULAR_FAMILIES + SINGULAR_FAMILIES

_SQRT3 = np.sqrt(3.0)

#: A state and the angle (radians) it is turned by in the picture; most crystals have one.
Layers = list[tuple[np.ndarray, float]]


# --- The growth model ------------------------------------------------------------------------


def lattice_xy(state_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian centres ``(x, y)`` of the cells of a hex-lattice state, in cell spacings.

    ``state[i, j]`` is the cell with axial coordinates ``q = j - h`` and ``r = i - h`` where
    ``h`` is the centre index; its centre lies at ``x = q + r / 2``, ``y = r * sqrt(3) / 2``, so
    all six neighbours are exactly one unit away and the 6-fold symmetry is not squashed.
    Returns two float64 arrays of the state's shape.
    """
    rows, columns = state_shape
    r, q = np.meshgrid(
        np.arange(rows) - (rows - 1) / 2, np.arange(columns) - (columns - 1) / 2, indexing="ij"
    )
    return q + r / 2, r * _SQRT3 / 2


def _check_growth_parameters(alpha, beta, gamma, steps, grid_radius, max_fill) -> None:
    """Raise one ValueError naming every parameter of :func:`grow_crystal` out of range."""
    problems = []
    if not 0 < alpha <= 2:
        problems.append(f"alpha={alpha} must be in (0, 2] (diffusion; 1 is Reiter's usual value)")
    if not 0 <= beta < 1:
        problems.append(f"beta={beta} must be in [0, 1) (background vapour, below ice level)")
    if gamma < 0:
        problems.append(f"gamma={gamma} must be >= 0 (vapour added to receptive cells)")
    if int(steps) != steps or steps < 0:
        problems.append(f"steps={steps} must be a whole number >= 0")
    if int(grid_radius) != grid_radius or grid_radius < 4:
        problems.append(f"grid_radius={grid_radius} must be a whole number >= 4 (cells)")
    if max_fill is not None and not 0 < max_fill <= 1:
        problems.append(f"max_fill={max_fill} must be in (0, 1] or None")
    if problems:
        raise ValueError("grow_crystal: " + "; ".join(problems) + ".")


def grow_crystal(
    alpha: float,
    beta: float,
    gamma: float,
    steps: int,
    grid_radius: int,
    rng: np.random.Generator | None = None,
    *,
    noise: float = 0.002,
    max_fill: float | None = 0.9,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Grow one snow crystal with Reiter's (2005) hexagonal cellular model.

    Every cell of a hexagonal grid holds an amount of water ``s``; ``s >= 1`` means ice. The
    grid starts at the background vapour level ``beta`` everywhere, with one ice cell (the
    seed) in the middle. Each step does, for all cells at once:

    1. Find the receptive cells: ice, and cells touching ice.
    2. Receptive cells keep their water and gain ``gamma``.
    3. Water in the other cells diffuses: a cell keeps ``1 - alpha / 2`` of it and receives
       ``alpha / 12`` of each neighbour's. Receptive cells hold no free vapour, so whatever
       diffuses into them is captured and they slowly fill up to ice.
    4. Cells farther than ``grid_radius`` from the seed stay at ``beta``: far away, the air
       is untouched by the crystal.

    Parameters:
        alpha: diffusion rate in (0, 2]; Reiter mostly uses 1.
        beta: background vapour in [0, 1). Low (0.35-0.45) grows dendrites, middle (0.5-0.8)
            stellar plates and branches with broad tips, near 1 (0.97-0.99, with ``gamma``
            around 0.03) solid hexagonal plates. See ``RECIPES`` for tried combinations.
        gamma: vapour added to receptive cells each step (>= 0); more makes fatter crystals.
        steps: the most steps to run. Growth stops earlier once ice reaches ``max_fill``
            times ``grid_radius``, where the fixed boundary would start to distort it
            (``max_fill=None`` always runs every step).
        grid_radius: radius of the round domain, in cells.
        rng: when given, each cell's starting vapour gets a small random fluctuation (standard
            deviation ``noise``), so the six arms grow slightly differently, as in real air.
        start: a state from an earlier call with the same ``grid_radius`` to keep growing,
            as when a falling crystal drifts into other air: its ice is kept, the air around
            it is reset to the new ``beta``. ``None`` starts from a single seed cell.

    Returns:
        The final water amounts as a float32 array of shape ``(2h + 1, 2h + 1)`` with
        ``h = ceil(grid_radius / (sqrt(3) / 2)) + 2``, in axial coordinates: see
        :func:`lattice_xy` for where each cell lies in the plane. ``state >= 1`` is the ice.
    """
    _check_growth_parameters(alpha, beta, gamma, steps, grid_radius, max_fill)
    # An axial array is a rhombus in the plane: it must reach past the round domain everywhere.
    half = int(np.ceil(grid_radius / (_SQRT3 / 2))) + 2
    width = 2 * half + 1
    x, y = lattice_xy((width, width))
    distance = np.hypot(x, y).ravel()
    outside = distance >= grid_radius
    near_edge = np.flatnonzero(distance >= (max_fill or np.inf) * grid_radius)

    state = np.full(width * width, beta, dtype=np.float32)
    if rng is not None and noise > 0:
        state += rng.normal(0.0, noise, size=state.shape).astype(np.float32)
        np.clip(state, 0, 0.999, out=state)  # fluctuations in the air, never ice or negative
    state[outside] = beta
    if start is None:
        state[half * width + half] = 1.0
    else:
        start = np.asarray(start, dtype=np.float32)
        if start.shape != (width, width):
            raise ValueError(
                f"grow_crystal: start has shape {start.shape}, but grid_radius={grid_radius} "
                f"needs {(width, width)}; pass the grid_radius that grew it."
            )
        state = np.where(start.ravel() >= 1, start.ravel(), state)

    # On the flattened array the six neighbours of cell k are k + offset; the slice lo:hi keeps
    # every neighbour inside the array (the rows it wraps on lie outside the domain anyway).
    offsets = (1, -1, width, -width, 1 - width, width - 1)
    lo, hi = width + 1, width * width - width - 1
    keep, share = np.float32(1 - alpha / 2), np.float32(alpha / 12)
    inside = (~outside).astype(np.float32)
    background = np.where(outside, np.float32(beta), np.float32(0))
    vapour, arriving = np.empty_like(state), np.zeros_like(state)
    ice_cells = -1
    for _ in range(int(steps)):
        ice = state >= 1
        if np.count_nonzero(ice) != ice_cells:  # receptive cells change only with new ice
            ice_cells = np.count_nonzero(ice)
            if ice[near_edge].any():
                break
            touching = ice.copy()
            for offset in offsets:
                touching[lo:hi] |= ice[lo + offset : hi + offset]
            receptive = touching.astype(np.float32)
            open_air = 1 - receptive
            gain = receptive * np.float32(gamma)
        # state = (state * receptive + gain + vapour * keep + arriving * share) * inside
        #         + background, computed in place: this loop runs thousands of times.
        np.multiply(state, open_air, out=vapour)
        np.add(vapour[lo + 1 : hi + 1], vapour[lo - 1 : hi - 1], out=arriving[lo:hi])
        for offset in offsets[2:]:
            arriving[lo:hi] += vapour[lo + offset : hi + offset]
        state *= receptive
        state += gain
        vapour *= keep
        state += vapour
        arriving *= share
        state += arriving
        state *= inside
        state += background
    return state.reshape(width, width)


# --- Rendering -------------------------------------------------------------------------------


def _edge_distance(ice: np.ndarray) -> np.ndarray:
    """Hex-lattice steps from each ice cell to the nearest open cell (0 outside the ice).

    Peels the ice layer by layer: each round keeps the cells whose six neighbours are all ice.
    """
    distance = np.zeros(ice.shape, dtype=np.float32)
    layer = ice
    rows, columns = ice.shape
    while layer.any():
        distance += layer
        inner = layer[1:-1, 1:-1].copy()
        for down, right in ((0, 1), (0, -1), (1, 0), (-1, 0), (-1, 1), (1, -1)):
            inner &= layer[1 + down : rows - 1 + down, 1 + right : columns - 1 + right]
        layer = np.zeros_like(layer)
        layer[1:-1, 1:-1] = inner
    return distance


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the first two axes (``sigma`` in pixels, edges repeated), in float32.

    A separable convolution: 1-D Gaussian weights out to 3 sigma, down the rows, then across
    the columns. Not Pillow's (box blurs on 8-bit images) nor scipy's (sums in float64): either
    would change the demo images a little, and with them the demo set's distances.
    """
    radius = max(1, int(np.ceil(3 * sigma)))
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    weights /= weights.sum()
    blurred = image.astype(np.float32)
    for axis in (0, 1):
        padding = [(radius, radius) if k == axis else (0, 0) for k in range(blurred.ndim)]
        windows = np.lib.stride_tricks.sliding_window_view(
            np.pad(blurred, padding, mode="edge"), weights.size, axis=axis
        )
        blurred = sum(weight * windows[..., k] for k, weight in enumerate(weights))
    return blurred


def _sample(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear look-up of a hex-lattice ``field`` at plane points ``(x, y)`` (cell spacings)."""
    centre_row = (field.shape[0] - 1) / 2
    centre_column = (field.shape[1] - 1) / 2
    row = y * (2 / _SQRT3) + centre_row
    column = x - (row - centre_row) / 2 + centre_column
    row = np.clip(row, 0, field.shape[0] - 1.001)
    column = np.clip(column, 0, field.shape[1] - 1.001)
    row0 = row.astype(np.int64)
    column0 = column.astype(np.int64)
    fr = (row - row0).astype(np.float32)
    fc = (column - column0).astype(np.float32)
    top = field[row0, column0] * (1 - fc) + field[row0, column0 + 1] * fc
    bottom = field[row0 + 1, column0] * (1 - fc) + field[row0 + 1, column0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def _lattice_relief(state: np.ndarray, bands: float) -> tuple[np.ndarray, np.ndarray]:
    """Ice coverage (0/1) and a relief height for each cell of a hex-lattice state.

    The relief mixes a roof over the ice (ridges along the arms and to the plate corners,
    from the distance to the edge) with the water the model piled up in older ice, which
    records growth bands.
    """
    ice = state >= 1
    distance = _edge_distance(ice)
    roof = 1 - np.exp(-distance / 2.5) + 0.5 * distance / distance.max()
    piled = np.where(ice, state - 1, 0).astype(np.float32)
    scale = float(np.percentile(piled[ice], 95)) or 1.0
    layers = np.clip(piled / scale, 0, 1.5)
    return ice.astype(np.float32), (roof + bands * layers).astype(np.float32)


def _extent(state: np.ndarray) -> float:
    """Distance from the centre to the farthest ice cell, in cell spacings."""
    x, y = lattice_xy(state.shape)
    ice = state >= 1
    return float(np.hypot(x[ice], y[ice]).max()) + 1.0


def _pixel_grid(side: int, scale: float, rotation: float) -> tuple[np.ndarray, np.ndarray]:
    """Plane coordinates (cell spacings) of every pixel centre, rotated by ``rotation`` rad."""
    centre = (side - 1) / 2
    rows, columns = np.mgrid[0:side, 0:side].astype(np.float64)
    u = (columns - centre) / scale
    v = (centre - rows) / scale
    cos, sin = np.cos(rotation), np.sin(rotation)
    return cos * u + sin * v, -sin * u + cos * v


def _render_layers(layers: Layers, side: int, rng: np.random.Generator, bands: float) -> np.ndarray:
    """Render one or more hex-lattice states, each turned by its own angle, as one photo."""
    if any(state.ndim != 2 or not (state >= 1).any() for state, _ in layers):
        raise ValueError(
            "render_crystal: the state must be a 2-D hex-lattice array from grow_crystal "
            "holding some ice (cells >= 1); this one has none, grow it longer."
        )
    extent = max(_extent(state) for state, _ in layers)
    scale = rng.uniform(0.80, 0.92) * (side / 2) / extent  # pixels per cell spacing
    rotation = rng.uniform(0, 2 * np.pi)
    coverage = np.zeros((side, side), dtype=np.float32)
    height = np.zeros((side, side), dtype=np.float32)
    for state, turn in layers:
        ice, relief = _lattice_relief(state, bands)
        x, y = _pixel_grid(side, scale, rotation + turn)
        coverage = np.maximum(coverage, _sample(ice, x, y))
        height = np.maximum(height, _sample(relief, x, y))
    return _photograph(coverage, height, scale, rng)


def _smoothstep(low: float, high: float, value: np.ndarray) -> np.ndarray:
    """0 below ``low``, 1 above ``high``, and a smooth S-curve in between."""
    t = np.clip((value - low) / (high - low), 0, 1)
    return t * t * (3 - 2 * t)


def _photograph(
    coverage: np.ndarray, height: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """Turn ice coverage and relief (both ``(side, side)``) into an RGB uint8 'photo'.

    ``scale`` is pixels per lattice cell: the lattice staircase is smoothed over about a cell.
    """
    side = coverage.shape[0]
    unit = side / 256  # keeps blur radii and noise alike at every image size
    # Soften the lattice staircase, then sharpen back to a crisp but smooth outline.
    ice = _smoothstep(0.3, 0.7, _blur(coverage, max(0.4, 0.35 * scale)))
    relief = _blur(height * ice, max(0.5, 0.4 * scale))
    luminance = _dark_field(ice, relief, unit, rng)
    glow = _blur(ice, 6 * unit)
    tint = np.array([0.82, 0.90, 1.0]) + rng.uniform(-0.04, 0.04, 3)
    background = _background(side, rng)
    opacity = rng.uniform(0.75, 0.9)
    photo = background * (1 - opacity * ice[..., None]) + (ice * luminance)[..., None] * tint
    photo += 0.05 * glow[..., None] * tint
    photo += rng.normal(0, 0.012, photo.shape)
    photo = _blur(photo, 0.5 * unit)
    return (np.clip(photo, 0, 1) ** (1 / 1.1) * 255 + 0.5).astype(np.uint8)


def _dark_field(
    ice: np.ndarray, relief: np.ndarray, unit: float, rng: np.random.Generator
) -> np.ndarray:
    """How bright each pixel of the ice looks under a snowflake microscope's dark-field light.

    Slopes (ridges, growth steps, edges) scatter light into the lens and look bright, flat ice
    lets the dark backdrop through, one side (at a random azimuth) is lit a little more than
    the other, and the rim catches extra light. This is what makes the relief show.
    """
    slope_y, slope_x = np.gradient(relief * (3.0 * unit))
    steepness = np.hypot(slope_x, slope_y)
    scatter = steepness / (0.35 + steepness)
    azimuth = rng.uniform(0, 2 * np.pi)
    side_light = (np.cos(azimuth) * slope_x - np.sin(azimuth) * slope_y) / (0.5 + steepness)
    rim = np.clip(ice - _blur(ice, 1.6 * unit), 0, 1)
    brightness = rng.uniform(0.85, 1.1)
    luminance = brightness * (0.28 + 0.75 * scatter + 0.2 * side_light + 0.9 * rim)
    return np.clip(luminance, 0, 1.3)


def _background(side: int, rng: np.random.Generator) -> np.ndarray:
    """A dark, nearly even backdrop, blue to black, with a soft gradient: ``(side, side, 3)``."""
    base = np.array([0.015, 0.03, 0.08]) * rng.uniform(0.5, 1.6) + rng.uniform(0, 0.015)
    angle = rng.uniform(0, 2 * np.pi)
    rows, columns = np.mgrid[0:side, 0:side] / side - 0.5
    ramp = 1 + 0.35 * (np.cos(angle) * columns + np.sin(angle) * rows)
    return (ramp[..., None] * base).astype(np.float32)


def _checked_side(side: int) -> int:
    if int(side) != side or side < 16:
        raise ValueError(f"side={side} must be a whole number of pixels >= 16.")
    return int(side)


def render_crystal(
    state: np.ndarray,
    side: int = 256,
    rng: np.random.Generator | None = None,
    *,
    bands: float = 0.6,
) -> np.ndarray:
    """Photograph a hex-lattice state as a bright, translucent crystal on a dark backdrop.

    The lattice is mapped to pixels through the axial-to-Cartesian map of :func:`lattice_xy`,
    scaled so the crystal fills most of the frame and turned by a random angle. Relief (ridges
    along the arms, growth bands) is lit from a random side; the edges catch extra light, as
    in real snowflake photographs.

    Parameters:
        state: a state from :func:`grow_crystal` (``>= 1`` is ice).
        side: width and height of the picture in pixels (>= 16).
        rng: randomness for the turn, size, light and backdrop; ``None`` means seed 0.
        bands: how strongly the growth bands (water the model piled up in older ice) show
            as relief, next to the ridges every crystal gets; 0 hides them.

    Returns:
        An RGB picture, uint8 array of shape ``(side, side, 3)``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    return _render_layers([(np.asarray(state), 0.0)], _checked_side(side), rng, bands)


# --- Families --------------------------------------------------------------------------------


class Phase(NamedTuple):
    """One stretch of growth in steady air; each value is a (low, high) range to draw from.

    ``fill`` is how far out (as a fraction of the grid radius) the ice may reach before the
    crystal moves on to the next phase.
    """

    alpha: tuple[float, float]
    beta: tuple[float, float]
    gamma: tuple[float, float]
    fill: tuple[float, float]


class Recipe(NamedTuple):
    """How a regular family grows: the phases in order, the grid and how its bands show."""

    phases: tuple[Phase, ...]
    grid_radius: int = 70
    bands: float = 0.6


# A crystal's shape records the air it fell through: a plate grows where the air is moist and
# the vapour abundant (high beta), branches where vapour is scarce (low beta). Starting in one
# and ending in the other gives the plates with arms and the dendrites with a plate in the
# middle that real snowfalls are full of.
_PLATE_CORE = Phase(alpha=(1.0, 1.0), beta=(0.975, 0.985), gamma=(0.025, 0.035), fill=(0.25, 0.35))
RECIPES: dict[str, Recipe] = {
    "hexagonal_plate": Recipe(
        (
            _PLATE_CORE._replace(fill=(0.6, 0.75)),
            Phase(alpha=(1.0, 1.0), beta=(0.955, 0.97), gamma=(0.012, 0.02), fill=(0.8, 0.88)),
        ),
        bands=0.3,
    ),
    "sectored_plate": Recipe(
        (
            Phase(alpha=(2.0, 2.0), beta=(0.39, 0.42), gamma=(0.0008, 0.0015), fill=(0.5, 0.6)),
            Phase(alpha=(1.0, 1.0), beta=(0.79, 0.83), gamma=(0.025, 0.03), fill=(0.85, 0.9)),
        )
    ),
    "stellar_plate": Recipe(
        (Phase(alpha=(1.0, 1.0), beta=(0.48, 0.55), gamma=(0.012, 0.02), fill=(0.82, 0.9)),)
    ),
    "stellar_dendrite": Recipe(
        (
            _PLATE_CORE,
            Phase(alpha=(1.0, 1.0), beta=(0.57, 0.62), gamma=(0.004, 0.006), fill=(0.82, 0.9)),
        )
    ),
    "fernlike_dendrite": Recipe(
        (Phase(alpha=(2.0, 2.0), beta=(0.37, 0.43), gamma=(0.0005, 0.0015), fill=(0.82, 0.9)),),
        grid_radius=85,
    ),
}
#: Grid radius (cells) of :func:`quick_crystal`: coarse, but grown in milliseconds.
QUICK_GRID_RADIUS = 16


def _grow_recipe(recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    """Grow a crystal through the phases of ``recipe``, drawing each parameter from its range."""
    state = None
    for phase in recipe.phases:
        state = grow_crystal(
            rng.uniform(*phase.alpha),
            rng.uniform(*phase.beta),
            rng.uniform(*phase.gamma),
            steps=20_000,
            grid_radius=recipe.grid_radius,
            rng=rng,
            max_fill=rng.uniform(*phase.fill),
            start=state,
        )
    return state


def _twelve_branched(rng: np.random.Generator) -> tuple[Layers, float]:
    """Two fern-like crystals grown together, one turned by 30 degrees: a rare twin."""
    recipe = RECIPES["fernlike_dendrite"]
    first = _grow_recipe(recipe, rng)
    second = _grow_recipe(recipe, rng)
    return [(first, 0.0), (second, np.pi / 6 + rng.uniform(-0.04, 0.04))], recipe.bands


def _triangular(rng: np.random.Generator) -> tuple[Layers, float]:
    """A plate whose young core was cut to a truncated triangle, then grew on: a trigonal crystal.

    Real trigonal crystals come from growth that favoured three alternate sides; cutting the
    core and letting the model grow on keeps the outline and adds the growth around it.
    """
    recipe = RECIPES["hexagonal_plate"]
    core = _grow_recipe(recipe._replace(phases=recipe.phases[:1]), rng)
    x, y = lattice_xy(core.shape)
    cut = _extent(core) * _SQRT3 / 2 * rng.uniform(0.6, 0.72)  # from the centre, < apothem
    keep = np.ones(core.shape, dtype=bool)
    for angle in np.pi / 6 + np.arange(3) * 2 * np.pi / 3:
        keep &= np.cos(angle) * x + np.sin(angle) * y <= cut
    edge = recipe.phases[1]
    state = grow_crystal(
        rng.uniform(*edge.alpha),
        rng.uniform(*edge.beta),
        rng.uniform(*edge.gamma),
        steps=int(rng.integers(8, 14)),
        grid_radius=recipe.grid_radius,
        rng=rng,
        max_fill=None,
        start=np.where(keep, core, 0.0),
    )
    return [(state, 0.0)], recipe.bands


def _broken(rng: np.random.Generator) -> tuple[Layers, float]:
    """A stellar dendrite that lost two arms near the centre and the tip of a third."""
    recipe = RECIPES["stellar_dendrite"]
    state = _grow_recipe(recipe, rng)
    x, y = lattice_xy(state.shape)
    radius = np.hypot(x, y)
    extent = _extent(state)
    snapped_at = (rng.uniform(0.25, 0.35), rng.uniform(0.3, 0.45), rng.uniform(0.6, 0.75))
    for arm, kept in zip(rng.choice(6, size=3, replace=False), snapped_at, strict=True):
        off_axis = np.angle(np.exp(1j * (np.arctan2(y, x) - arm * np.pi / 3)))
        state[(np.abs(off_axis) < np.pi / 6) & (radius > kept * extent)] = 0.0
    return [(state, 0.0)], recipe.bands


def _capped_column(rng: np.random.Generator) -> tuple[Layers, float]:
    """A hexagonal column with a thin plate grown on each end, seen from the side.

    This one is not grown by the planar model (it is 3-D): it is drawn straight onto the
    lattice, with the prism's faces and hollow ends as relief.
    """
    x, y = lattice_xy((121, 121))
    half_width = rng.uniform(9, 12)
    half_length = rng.uniform(20, 28)
    cap_half_width = rng.uniform(34, 42)
    cap_thickness = rng.uniform(2.0, 3.5)
    body = (np.abs(x) <= half_width) & (np.abs(y) <= half_length)
    beyond = np.abs(y) - half_length
    caps = (beyond >= 0) & (beyond <= cap_thickness) & (np.abs(x) <= cap_half_width - 2 * beyond)
    faces = np.clip(1.5 - 1.5 * np.abs(x) / half_width, 0, 1)
    hollow = np.clip((np.abs(y) - 0.4 * half_length) / half_length, 0, 1) * (
        np.abs(x) < 0.5 * half_width
    )
    state = np.where(body, 1.0 + 0.2 * faces - 0.15 * hollow, 0.0)
    state = np.where(caps, 1.05, state)
    return [(state.astype(np.float32), 0.0)], 0.8


_SINGULAR_GROWERS = {
    "twelve_branched": _twelve_branched,
    "triangular": _triangular,
    "broken": _broken,
    "capped_column": _capped_column,
}


def _checked_seed(seed: int) -> int:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed={seed} must be a whole number >= 0.")
    return int(seed)


def generate_crystal(family: str, seed: int, side: int = 256) -> np.ndarray:
    """Grow and photograph one snow crystal of ``family`` (one of ``FAMILIES``).

    Everything random (growth parameters within the family's ranges, the air's fluctuations,
    turn, size, light, backdrop) comes from ``numpy.random.default_rng(seed)``, so the same
    ``family``, ``seed`` and ``side`` always give the same pixels. Takes 0.02-0.6 s.

    Returns an RGB uint8 array of shape ``(side, side, 3)``.
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; choose one of: {', '.join(FAMILIES)}.")
    rng = np.random.default_rng(_checked_seed(seed))
    side = _checked_side(side)
    if family in RECIPES:
        layers, bands = [(_grow_recipe(RECIPES[family], rng), 0.0)], RECIPES[family].bands
    else:
        layers, bands = _SINGULAR_GROWERS[family](rng)
    return _render_layers(layers, side, rng, bands)


def quick_crystal(seed: int, size: tuple[int, int] = (128, 128)) -> np.ndarray:
    """A small crystal photo in a few milliseconds, for tests and benchmarks that need many.

    Like :func:`generate_crystal`, but the family is picked by ``seed`` among
    ``REGULAR_FAMILIES`` and grown on a coarse grid (``QUICK_GRID_RADIUS`` cells). ``size`` is
    ``(width, height)`` in pixels, the larger at least 16; a frame that is not square is cut
    from the middle of a square photo. Returns RGB uint8 pixels of shape ``(height, width, 3)``.
    """
    width, height = size
    side = _checked_side(max(width, height))
    seed = _checked_seed(seed)
    rng = np.random.default_rng(seed)
    recipe = RECIPES[REGULAR_FAMILIES[seed % len(REGULAR_FAMILIES)]]
    state = _grow_recipe(recipe._replace(grid_radius=QUICK_GRID_RADIUS), rng)
    pixels = _render_layers([(state, 0.0)], side, rng, recipe.bands)
    top, left = (side - height) // 2, (side - width) // 2
    return pixels[top : top + height, left : left + width]


# --- The demo set ----------------------------------------------------------------------------

#: Crystal seeds of one demo set: ``seed * SEEDS_PER_SET + 1000 * family index + number``.
SEEDS_PER_SET = 100_000
_MOST_PER_FAMILY = 999
#: The largest ``count`` and ``seed`` of :func:`plan_demo_set` (notebook 01's ``DEMO_COUNT``
#: and ``DEMO_SEED``): crystal seeds must stay below 2**32.
MAX_DEMO_COUNT = _MOST_PER_FAMILY * len(REGULAR_FAMILIES) + len(SINGULAR_FAMILIES)
MAX_DEMO_SEED = 2**32 // SEEDS_PER_SET - 1


def plan_demo_set(count: int = 60, seed: int = 0) -> list[tuple[str, int, int]]:
    """Which crystals a demo set of ``count`` holds: ``(family, number, crystal seed)`` each.

    Regular crystals are dealt round-robin over ``REGULAR_FAMILIES``; once every regular
    family has one, each singular family gets exactly one crystal, in ``SINGULAR_FAMILIES``
    order. So 6 gives the five regular families and a twelve-branched twin, 9 or more shows
    every family, and 60 gives 12, 11, 11, 11, 11 regular crystals and 4 singular ones.
    ``number`` counts from 1 within a family. The crystal seed depends only on ``seed``, the
    family and the number, so a crystal stays the same when ``count`` changes.
    """
    if int(count) != count or count < 1:
        raise ValueError(f"count={count} must be a whole number >= 1.")
    if int(seed) != seed or not 0 <= seed <= MAX_DEMO_SEED:
        raise ValueError(f"seed={seed} must be a whole number in [0, {MAX_DEMO_SEED}].")
    if count > MAX_DEMO_COUNT:
        raise ValueError(
            f"count={count} is too large; a demo set holds at most {MAX_DEMO_COUNT} crystals."
        )
    singular = min(len(SINGULAR_FAMILIES), max(0, count - len(REGULAR_FAMILIES)))
    regular = count - singular
    families = [REGULAR_FAMILIES[k % len(REGULAR_FAMILIES)] for k in range(regular)]
    families += SINGULAR_FAMILIES[:singular]
    plan, numbers = [], dict.fromkeys(FAMILIES, 0)
    for family in families:
        numbers[family] += 1
        crystal_seed = seed * SEEDS_PER_SET + 1000 * FAMILIES.index(family) + numbers[family]
        plan.append((family, numbers[family], int(crystal_seed)))
    return plan


def _png_bytes(pixels: np.ndarray) -> bytes:
    """The PNG encoding of an RGB uint8 array; the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _up_to_date(path: Path, known: dict | None, wanted: dict) -> bool:
    """True when manifest row ``known`` describes the crystal ``wanted`` and ``path`` is intact."""
    return (
        known is not None
        and all(known[column] == wanted[column] for column in ("url", "width", "height"))
        and path.is_file()
        and files.sha256_file(path) == known["sha256"]
    )


def make_demo_set(
    image_dir: str | os.PathLike,
    count: int = 60,
    seed: int = 0,
    side: int = 256,
    progress: bool = True,
) -> pd.DataFrame:
    """Write a synthetic demo set of snow crystal photos into ``image_dir`` (notebook 01).

    Files are named ``demo-<family>-<NN>.png`` (see :func:`plan_demo_set` for the mix) and
    written atomically; ``image_dir/manifest.csv`` gets one row per crystal, with ``url``
    ``demo:<family>/<crystal seed>`` and ``page`` ``demo:``, merged with the rows already there.
    Running again with the same arguments rewrites nothing: a file whose manifest row and
    SHA-256 already match is left alone, and the manifest is only written when it changes.

    Returns the manifest rows of this set (columns ``files.MANIFEST_COLUMNS``) in plan order.
    """
    side = _checked_side(side)
    plan = plan_demo_set(count, seed)
    folder = Path(image_dir)
    folder.mkdir(parents=True, exist_ok=True)
    known = {row["file"]: row for row in files.read_manifest(folder).to_dict("records")}
    rows = {}
    for family, number, crystal_seed in tqdm(
        plan, desc="Growing snow crystals", unit="crystal", disable=not progress
    ):
        name = f"demo-{family}-{number:02d}.png"
        url = f"{files.DEMO_PAGE}{family}/{crystal_seed}"
        row = {"file": name, "url": url, "page": files.DEMO_PAGE, "width": side, "height": side}
        path = folder / name
        if _up_to_date(path, known.get(name), row):
            rows[name] = known[name]
            continue
        data = _png_bytes(generate_crystal(family, crystal_seed, side))
        rows[name] = row | {"sha256": files.sha256_bytes(data)}
        if not (path.is_file() and files.sha256_file(path) == rows[name]["sha256"]):
            files.atomic_write_bytes(path, data)
    if known | rows != known:
        files.write_manifest(folder, (known | rows).values())
    return pd.DataFrame(rows.values(), columns=files.MANIFEST_COLUMNS)
