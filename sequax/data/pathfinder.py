"""Pathfinder (Linsley et al. 2018) and Path-X, as in the Long Range Arena.

An image holds two round markers and several curved, dashed contours of the
same length; the label is 1 when both markers sit on the two ends of one
contour, 0 when they sit on ends of two different contours. Every image has
``1 + num_distractors`` contours (the negatives' second marked contour is one
of them), so the amount of ink does not give the label away. Contours never
touch each other (``spacing``), and markers touch only their own contour.

Difficulty: ``contour_length`` (dashes per contour; the LRA uses the hardest
of Linsley's settings, 14) and ``num_distractors``. A contour is a chain of
dashes ``dash_length`` long with ``dash_gap`` between them, turning by up to
``max_turn`` radians at each dash. Contours are laid out in a 32 x 32 frame
(lengths are its pixels) and drawn at ``resolution`` (Path-X:
``resolution=128``, the same images 4x larger). Rendering is anti-aliased
(4x supersampling); pixels are uint8 0-255, the tokens of the flattened image
(``vocab_size`` 256, sequence length ``resolution ** 2``).

LRA sizes: 160K/20K/20K for Pathfinder-32 (the LRA's split of its 200K
images), the same for Path-X. Images are generated once into the local cache
(:mod:`sequax.data.cache`), in ``num_workers`` processes, and depend only on
the parameters and the seed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Optional, Tuple

import numpy as np

from sequax.data import cache
from sequax.data.registry import register_task

VERSION = 1
SUPERSAMPLE = 4
CHUNK = 250  # images per generation job
MAX_TRIES = 200  # attempts at one image before giving up with a ValueError
START_TRIES = 20  # starting points tried for one contour
TURN_CANDIDATES = 12  # turns tried for one dash
CELLS = 2  # occupancy cells per pixel


BASE = 32  # contours are laid out in a BASE x BASE frame and drawn at ``resolution``


@dataclasses.dataclass(frozen=True)
class Style:
    """How one image is drawn. Lengths are pixels of a 32 x 32 image; at ``resolution``
    the same layout is drawn ``resolution / 32`` times larger."""

    resolution: int = 32
    contour_length: int = 14
    num_distractors: int = 2
    dash_length: float = 1.0
    dash_gap: float = 0.8
    thickness: float = 0.8
    max_turn: float = 0.8
    marker_radius: float = 1.2
    spacing: float = 0.8  # least distance between the ink of two contours


def _segment_points(a: np.ndarray, b: np.ndarray, step: float) -> np.ndarray:
    count = max(2, int(np.ceil(np.linalg.norm(b - a) / step)) + 1)
    t = np.linspace(0.0, 1.0, count)[:, None]
    return a[None] * (1 - t) + b[None] * t


class _Grid:
    """Cells ``1 / CELLS`` px wide marking where new ink may not go (other ink, dilated)."""

    def __init__(self, resolution: int):
        self.size = resolution * CELLS
        self.cells = np.zeros((self.size, self.size), bool)

    def _index(self, points: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum((points * CELLS).astype(np.int64), 0), self.size - 1)

    def hits(self, points: np.ndarray) -> np.ndarray:
        """Whether any of ``points`` ``[..., k, 2]`` is taken: bool ``[...]``."""
        idx = self._index(points)
        return self.cells[idx[..., 1], idx[..., 0]].any(axis=-1)

    def stamp(self, points: np.ndarray, radius: float) -> None:
        idx = self._index(points)[:, None] + _offsets(round(radius * CELLS, 3))[None]
        idx = np.minimum(np.maximum(idx, 0), self.size - 1).reshape(-1, 2)
        self.cells[idx[:, 1], idx[:, 0]] = True


@functools.lru_cache(maxsize=16)
def _offsets(radius_cells: float) -> np.ndarray:
    r = int(np.ceil(radius_cells))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dx ** 2 + dy ** 2 <= radius_cells ** 2
    return np.stack([dx[keep], dy[keep]], -1)


def _contour(rng: np.random.Generator, style: Style, taken: _Grid) -> Optional[List[np.ndarray]]:
    """Dashes ``[(start, end), ...]`` of one contour that keeps clear of ``taken``, or None.

    Each dash turns by a random angle up to ``max_turn``; of ``TURN_CANDIDATES``
    draws the first that stays inside the image and clear of other ink (and of
    the contour's own earlier dashes) is taken, so a contour bends away from
    walls and from other contours.
    """
    res, margin = BASE, style.marker_radius + style.thickness
    t = np.linspace(0.0, 1.0, max(2, int(np.ceil(style.dash_length / 0.25)) + 1))[:, None]
    for _ in range(START_TRIES):
        pos = rng.uniform(margin, res - margin, size=2)
        if taken.hits(pos[None] + _disk(style.marker_radius + style.spacing)):
            continue
        own = _Grid(BASE)
        heading = rng.uniform(0, 2 * np.pi)
        dashes, points = [], []
        for _ in range(style.contour_length):
            turns = heading + rng.uniform(-style.max_turn, style.max_turn, size=TURN_CANDIDATES)
            directions = np.stack([np.cos(turns), np.sin(turns)], -1)  # [C, 2]
            ends = pos + style.dash_length * directions
            sampled = pos[None, None] * (1 - t)[None] + ends[:, None] * t[None]  # [C, k, 2]
            inside = ((ends >= margin) & (ends <= res - margin)).all(-1)
            ok = np.flatnonzero(inside & ~taken.hits(sampled) & ~own.hits(sampled))
            if not len(ok):
                break
            choice = ok[0]
            heading, end = turns[choice], ends[choice]
            dashes.append((pos, end))
            points.append(sampled[choice])
            if len(points) > 2:  # the contour may not run back over itself
                own.stamp(points[-3], style.spacing + style.thickness)
            pos = end + style.dash_gap * directions[choice]
        else:
            return dashes
    return None


def _disk(radius: float) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], -1)
    return np.concatenate([np.zeros((1, 2)), ring * radius, ring * radius / 2])


def _ink(dashes) -> np.ndarray:
    return np.concatenate([_segment_points(a, b, 0.25) for a, b in dashes])


def draw_example(rng: np.random.Generator, style: Style, label: int) -> Optional[Tuple[np.ndarray, Dict]]:
    """One image ``uint8 [resolution, resolution]`` with ``label``, and where its markers are; None if stuck.

    The info dict has ``markers`` ``[2, 2]`` (x, y, in the 32 x 32 frame) and ``contours`` (the dash
    endpoints of each).
    """
    contours, taken = [], _Grid(BASE)
    for _ in range(1 + style.num_distractors):
        dashes = _contour(rng, style, taken)
        if dashes is None:
            return None
        contours.append(dashes)
        taken.stamp(_ink(dashes), style.spacing + style.thickness)
    first, last = contours[0][0][0], contours[0][-1][1]
    if label:
        markers = np.stack([first, last])
    else:
        end_of_second = contours[1][0][0] if rng.random() < 0.5 else contours[1][-1][1]
        markers = np.stack([first if rng.random() < 0.5 else last, end_of_second])
    # A marker may only touch the contour it marks.
    marked = [0, 0] if label else [0, 1]
    for marker, owner in zip(markers, marked):
        foreign = np.concatenate([_ink(c) for i, c in enumerate(contours) if i != owner])
        reach = style.marker_radius + style.thickness / 2 + style.spacing
        if np.min(np.linalg.norm(foreign - marker, axis=-1)) < reach:
            return None
    if np.linalg.norm(markers[0] - markers[1]) < 2 * style.marker_radius + style.spacing:
        return None
    image = render(style, [d for c in contours for d in c], markers)
    return image, {"markers": markers, "contours": contours}


def render(style: Style, dashes, markers, supersampled: bool = False) -> np.ndarray:
    """Anti-aliased uint8 image ``[resolution, resolution]`` of the dashes (flat-ended bars ``thickness`` wide) and
    filled marker disks; ``supersampled``: the bool ink mask ``SUPERSAMPLE`` times finer instead."""
    res, s = style.resolution, SUPERSAMPLE
    scale = res / BASE
    dashes = [(a * scale, b * scale) for a, b in dashes]
    markers = [m * scale for m in markers]
    fine = np.zeros((res * s, res * s), bool)
    centers = (np.arange(res * s) + 0.5) / s  # pixel-centre coordinates in image units
    half = style.thickness * scale / 2

    def stamp(lo, hi, inside):
        x0, y0 = np.maximum(np.floor(lo * s).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(hi * s).astype(int) + 1, res * s)
        if x1 <= x0 or y1 <= y0:
            return
        xs, ys = np.meshgrid(centers[x0:x1], centers[y0:y1])
        fine[y0:y1, x0:x1] |= inside(xs, ys)

    for a, b in dashes:
        ab = b - a
        denom = max(float(ab @ ab), 1e-9)

        def inside(xs, ys, a=a, ab=ab, denom=denom):  # a flat-ended bar ("paddle") along the dash
            t = ((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / denom
            across = (xs - a[0] - t * ab[0]) ** 2 + (ys - a[1] - t * ab[1]) ** 2
            return (t >= 0) & (t <= 1) & (across <= half ** 2)

        stamp(np.minimum(a, b) - half, np.maximum(a, b) + half, inside)
    r = style.marker_radius * scale
    for m in markers:
        stamp(m - r, m + r, lambda xs, ys, m=m: (xs - m[0]) ** 2 + (ys - m[1]) ** 2 <= r ** 2)
    if supersampled:
        return fine
    coverage = fine.reshape(res, s, res, s).mean(axis=(1, 3))
    return np.round(coverage * 255).astype(np.uint8)


def _chunk(index: int, seed: int, style: Style, count: int) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, index])
    images = np.zeros((count, style.resolution ** 2), np.uint8)
    labels = np.zeros(count, np.uint8)
    for i in range(count):
        label = int(rng.random() < 0.5)
        for _ in range(MAX_TRIES):
            drawn = draw_example(rng, style, label)
            if drawn is not None:
                break
        else:
            raise ValueError(
                f"pathfinder: could not place {1 + style.num_distractors} contours of "
                f"{style.contour_length} dashes in {style.resolution}x{style.resolution}; "
                "lower contour_length or num_distractors"
            )
        images[i], labels[i] = drawn[0].reshape(-1), label
    return images, labels


def build(sizes: Dict[str, int], seed: int, style: Style, num_workers: int) -> cache.Splits:
    """The splits: ``inputs`` uint8 ``[N, resolution**2]``, ``label`` uint8, ``lengths`` int32."""
    total = sum(sizes.values())
    counts = [min(CHUNK, total - start) for start in range(0, total, CHUNK)]
    jobs = functools.partial(_chunk_job, seed=seed, style=style)
    parts = cache.parallel_map(jobs, list(enumerate(counts)), num_workers)
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    splits, start = {}, 0
    for split, size in sizes.items():
        splits[split] = {
            "inputs": images[start:start + size],
            "label": labels[start:start + size],
            "lengths": np.full(size, style.resolution ** 2, np.int32),
        }
        start += size
    return splits


def _chunk_job(item, seed, style):
    index, count = item
    return _chunk(index, seed, style, count)


@register_task("pathfinder")
class Pathfinder(cache.CachedClassification):
    """Pathfinder / Path-X: ``inputs`` int32 ``[batch, resolution**2]`` pixels, ``label`` 0/1.

    ``resolution`` 32 (Pathfinder) or 128 (Path-X); lengths (``dash_length``,
    ``dash_gap``) are pixels of a 32 x 32 image; see the module docstring.
    """

    num_classes = 2
    vocab_size = 256

    def __init__(self, resolution: int = 32, contour_length: int = 14, num_distractors: int = 2,
                 num_train: int = 160_000, num_validation: int = 20_000, num_test: int = 20_000,
                 dash_length: float = 1.0, dash_gap: float = 0.8, max_turn: float = 0.8,
                 seed: int = 0, cache_dir: Optional[str] = None, num_workers: int = 0):
        sizes = cache.split_sizes(num_train, num_validation, num_test)
        self.check_positive(resolution=resolution, contour_length=contour_length)
        if resolution < 16:
            raise ValueError(f"resolution must be at least 16 pixels, got {resolution}")
        if num_distractors < 1:
            raise ValueError(f"num_distractors must be >= 1 (a negative marks two contours), got {num_distractors}")
        if dash_length <= 0 or dash_gap < 0:
            raise ValueError(f"dash_length must be positive and dash_gap >= 0, got {dash_length}, {dash_gap}")
        style = Style(resolution=int(resolution), contour_length=int(contour_length),
                      num_distractors=int(num_distractors), dash_length=float(dash_length),
                      dash_gap=float(dash_gap), max_turn=float(max_turn))
        self.style, self.seq_len = style, int(resolution) ** 2
        params = dict(sizes=sizes, seed=int(seed), style=dataclasses.asdict(style))
        workers = cache.default_workers(num_workers)
        self.splits = cache.cached_splits(
            "pathfinder", VERSION, params, lambda: build(sizes, int(seed), style, workers), cache_dir
        )


__all__ = ["Pathfinder", "Style", "build", "draw_example", "render"]
