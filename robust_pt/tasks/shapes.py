"""ShapesWorld scenes: a deterministic numpy generator of small RGB scenes and their scene graphs.

A scene is 1-4 flat-coloured objects (circle, square, triangle; five colours; two sizes)
on a cluttered background: a low-contrast tinted gradient, a few thin grey lines and
specks, and gaussian pixel noise over everything. Objects never overlap (their bounding
boxes keep a gap) and lie fully inside the image.

Coordinates: pixel (row r, column c) covers [c, c+1) x [r, r+1); its centre is
(c + 0.5, r + 0.5). A box (x0, y0, x1, y1) is tight around the drawn pixels:
x0 = first column, x1 = last column + 1 (likewise for rows).

Determinism: everything is drawn from the `numpy.random.Generator` passed in, so the
same generator state gives byte-identical images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .vocab import COLOURS, SHAPES, SIZES

# Clearly distinct base colours (RGB in [0, 1]); each object gets a small jitter.
COLOUR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.88, 0.12, 0.10),
    "green": (0.10, 0.72, 0.18),
    "blue": (0.12, 0.28, 0.95),
    "yellow": (0.96, 0.88, 0.10),
    "purple": (0.62, 0.12, 0.78),
}
COLOUR_JITTER = 0.04
# Radius (px) of each size at a 64 x 64 image; scales linearly with the image side.
SIZE_RADIUS_64: dict[str, float] = {"small": 6.0, "large": 10.0}
# Half-extent of each shape's bounding box, in units of the radius.
_SHAPE_EXTENT: dict[str, float] = {"circle": 1.0, "square": 0.85, "triangle": 1.1}
NOISE_STD = 0.035
MAX_OBJECTS = 4


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene graph. `centre` is the centre of the shape's geometric box (px)."""

    shape: str
    colour: str
    size: str
    centre: tuple[float, float]  # (cx, cy) in pixels
    radius: float  # geometric radius in pixels (circle radius; square/triangle scale)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1: tight around the drawn pixels
    rgb: tuple[float, float, float]  # the drawn (jittered) colour

    @property
    def cx(self) -> float:
        return self.centre[0]

    @property
    def cy(self) -> float:
        return self.centre[1]

    def mask(self, image_size: int) -> np.ndarray:
        """Boolean (H, W) mask of the pixels this object covers."""
        return shape_mask(self.shape, self.centre[0], self.centre[1], self.radius, image_size)


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # float32 (3, H, W) in [0, 1]
    objects: tuple[SceneObject, ...]

    @property
    def size(self) -> int:
        return int(self.image.shape[-1])


@lru_cache(maxsize=8)
def _coords(size: int) -> np.ndarray:
    """Pixel-centre coordinates 0.5, 1.5, ..., size - 0.5 (read-only, float32)."""
    c = np.arange(size, dtype=np.float32) + np.float32(0.5)
    c.setflags(write=False)
    return c


def shape_radius(size_name: str, image_size: int) -> float:
    return SIZE_RADIUS_64[size_name] * image_size / 64.0


def shape_extent(shape: str, radius: float) -> float:
    """Half side of the shape's (square) geometric bounding box."""
    return _SHAPE_EXTENT[shape] * radius


def _window(cx: float, cy: float, extent: float, size: int) -> tuple[int, int, int, int]:
    """Rows r0:r1 and columns c0:c1 that contain every pixel within `extent` of the centre."""
    c0, c1 = max(0, math.floor(cx - extent) - 1), min(size, math.ceil(cx + extent) + 1)
    r0, r1 = max(0, math.floor(cy - extent) - 1), min(size, math.ceil(cy + extent) + 1)
    return r0, r1, c0, c1


def _local_mask(shape: str, cx: float, cy: float, radius: float, size: int) -> tuple[int, int, int, int, np.ndarray]:
    """(r0, r1, c0, c1, mask) with mask the shape's pixels inside rows r0:r1, columns c0:c1."""
    r0, r1, c0, c1 = _window(cx, cy, shape_extent(shape, radius), size)
    coords = _coords(size)
    dx = (coords[c0:c1] - np.float32(cx))[None, :]
    dy = (coords[r0:r1] - np.float32(cy))[:, None]
    if shape == "circle":
        m = dx * dx + dy * dy <= np.float32(radius * radius)
    elif shape == "square":
        h = np.float32(_SHAPE_EXTENT["square"] * radius)
        m = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    elif shape == "triangle":  # apex up, base at the bottom; width = height = 2h
        h = np.float32(_SHAPE_EXTENT["triangle"] * radius)
        m = (np.abs(dx) <= (dy + h) * np.float32(0.5)) & (dy <= h)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return r0, r1, c0, c1, m


def shape_mask(shape: str, cx: float, cy: float, radius: float, image_size: int) -> np.ndarray:
    """Boolean (S, S) mask of a shape centred at (cx, cy): the pixels the generator paints."""
    r0, r1, c0, c1, m = _local_mask(shape, cx, cy, radius, image_size)
    full = np.zeros((image_size, image_size), dtype=bool)
    full[r0:r1, c0:c1] = m
    return full


@lru_cache(maxsize=8)
def _line_steps(size: int) -> np.ndarray:
    """Fractions 0..1 at which a line is sampled: two points per pixel of the longest line."""
    t = np.linspace(0.0, 1.0, 2 * size + 2)[None, :, None]
    t.setflags(write=False)
    return t


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Tinted low-contrast gradient + a few thin grey lines + specks, float32 (3, S, S)."""
    u = rng.random(6).tolist()
    base = 0.38 + 0.24 * u[0]
    amp = 0.04 + 0.10 * u[1]
    theta = 2.0 * math.pi * u[2]
    # linear ramp along direction theta, zero-mean over the image, plus a slight colour tint
    centred = _coords(size) - np.float32(size / 2.0)
    ramp = np.add.outer(
        centred * np.float32(math.sin(theta) * amp / size), centred * np.float32(math.cos(theta) * amp / size)
    )
    level = np.array([base - 0.03 + 0.06 * v for v in u[3:6]], dtype=np.float32)
    img = ramp[None] + level[:, None, None]
    # thin grey lines (segments sampled densely) and single-pixel specks, painted in one go
    n_lines = int(rng.integers(1, 4))
    ends = rng.uniform(0.0, size, size=(n_lines, 2, 2))  # (line, p/q, x/y)
    contrast = rng.uniform(0.12, 0.22, n_lines) * np.where(rng.random(n_lines) < 0.5, 1.0, -1.0)
    pts = ends[:, 0:1, :] + _line_steps(size) * (ends[:, 1:2, :] - ends[:, 0:1, :])  # (L, T, 2)
    n_specks = int(rng.integers(4, 16)) * max(1, (size * size) // 4096)
    specks = rng.uniform(0.0, size, size=(n_specks, 2))
    xy = np.concatenate([pts.reshape(-1, 2), specks]).astype(np.intp)
    np.minimum(xy, size - 1, out=xy)
    greys = np.concatenate(
        [np.repeat(base + contrast, pts.shape[1]), base + rng.uniform(-0.25, 0.25, n_specks)]
    ).astype(np.float32)
    img[:, xy[:, 1], xy[:, 0]] = greys
    return img


def _place(
    rng: np.random.Generator, size: int, extent: float, boxes: list[tuple[float, ...]], gap: float
) -> tuple[float, float] | None:
    """A random centre whose box (centre +- extent) lies inside and keeps `gap` from `boxes`."""
    lo, hi = extent + 1.0, size - extent - 1.0
    if hi <= lo:
        return None
    r = extent + gap
    for cx, cy in rng.uniform(lo, hi, size=(32, 2)).tolist():
        # boxes b = (x0, y0, x1, y1) of earlier objects: separated along x or along y
        if all(cx + r <= b[0] or cx - r >= b[2] or cy + r <= b[1] or cy - r >= b[3] for b in boxes):
            return cx, cy
    return None


def generate_scene(
    rng: np.random.Generator,
    size: int = 64,
    n_objects: int | None = None,
    min_objects: int = 1,
    first: tuple[str, str] | None = None,
) -> Scene:
    """Draw one scene from `rng`. n_objects: fixed count (1-4), else uniform in [min_objects, 4].
    first: (colour, shape) of the first object (a class set's scene); the draws are the same either way."""
    if size < 16:
        raise ValueError(f"image size {size} is too small; use at least 16")
    if n_objects is None:
        n_objects = int(rng.integers(min_objects, MAX_OBJECTS + 1))
    img = _background(rng, size)
    gap = 2.0 * size / 64.0
    geo_boxes: list[tuple[float, ...]] = []
    objects: list[SceneObject] = []
    for _ in range(n_objects):
        k_shape, k_colour, k_size = rng.integers(0, (len(SHAPES), len(COLOURS), len(SIZES))).tolist()
        shape, colour, size_name = SHAPES[k_shape], COLOURS[k_colour], SIZES[k_size]
        if first is not None and not objects:
            colour, shape = first
        centre = None
        for s_name in (size_name, "small") if size_name == "large" else (size_name,):
            radius = shape_radius(s_name, size)
            extent = shape_extent(shape, radius)
            centre = _place(rng, size, extent, geo_boxes, gap)
            if centre is not None:
                size_name = s_name
                break
        if centre is None:  # no room left (rare): the scene keeps fewer objects
            break
        cx, cy = centre
        r0, r1, c0, c1, m = _local_mask(shape, cx, cy, radius, size)
        cols = np.flatnonzero(m.any(axis=0))
        rows = np.flatnonzero(m.any(axis=1))
        box = (c0 + int(cols[0]), r0 + int(rows[0]), c0 + int(cols[-1]) + 1, r0 + int(rows[-1]) + 1)
        jitter = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3).tolist()
        rgb = tuple(min(1.0, max(0.0, c + j)) for c, j in zip(COLOUR_RGB[colour], jitter))
        np.copyto(img[:, r0:r1, c0:c1], np.array(rgb, dtype=np.float32)[:, None, None], where=m[None])
        geo_boxes.append((cx - extent, cy - extent, cx + extent, cy + extent))
        objects.append(SceneObject(shape, colour, size_name, (cx, cy), radius, box, rgb))
    # gaussian luminance noise (the same per-pixel offset in all channels)
    noise = rng.standard_normal(size=(size, size), dtype=np.float32)
    noise *= np.float32(NOISE_STD)
    img += noise[None]
    np.minimum(img, np.float32(1.0), out=img)
    np.maximum(img, np.float32(0.0), out=img)
    return Scene(image=img, objects=tuple(objects))
