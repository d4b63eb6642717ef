"""Seeded initial layouts: where every object and fixture starts, without overlaps.

Items are kept apart as capsules seen from above (a segment plus a radius; a point for most
items), so a sampler can also keep a path clear, e.g. the strip a drawer slides into.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class LayoutRejected(Exception):
    """A sampled layout broke a constraint; the caller draws another one."""


@dataclass(frozen=True)
class Keepout:
    """Segment ``a``-``b`` (each ``[2]``, metres) widened by ``radius``: space an item owns."""

    a: np.ndarray
    b: np.ndarray
    radius: float
    owner: str

    def clearance(self, xy: np.ndarray, radius: float) -> float:
        """Gap between this keepout and a disc at ``xy`` ``[2]``; negative when they overlap."""
        ab = self.b - self.a
        denom = float(ab @ ab)
        t = 0.0 if denom == 0.0 else float(np.clip((xy - self.a) @ ab / denom, 0.0, 1.0))
        return float(np.linalg.norm(xy - (self.a + t * ab))) - self.radius - radius


@dataclass
class Layout:
    """Initial placements: ``poses[name] = (x, y, yaw)``; ``support_z[name]`` is the top of
    what an object rests on (table = 0); ``keepouts`` say where distractors must not go."""

    poses: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    support_z: dict[str, float] = field(default_factory=dict)
    keepouts: list[Keepout] = field(default_factory=list)


class LayoutBuilder:
    """Places items one by one from ``rng``, rejecting overlaps.

    ``gap`` is the free space between neighbours; 4 cm leaves room for an open finger beside
    a grasped object, so the expert never lands a fingertip on a neighbour.
    """

    def __init__(self, rng: np.random.Generator, gap: float = 0.04) -> None:
        self.rng = rng
        self.gap = gap
        self.layout = Layout()

    def xy(self, name: str) -> np.ndarray:
        """Placed position ``[2]`` of ``name``."""
        x, y, _ = self.layout.poses[name]
        return np.array([x, y])

    def is_free(self, xy: np.ndarray, radius: float, ignore: tuple[str, ...] = ()) -> bool:
        return all(
            k.clearance(xy, radius) >= self.gap
            for k in self.layout.keepouts
            if k.owner not in ignore
        )

    def place(
        self,
        name: str,
        xy: np.ndarray,
        radius: float,
        yaw: float = 0.0,
        support_z: float = 0.0,
        check: bool = True,
        ignore: tuple[str, ...] = (),
    ) -> np.ndarray:
        """Put ``name`` at ``xy`` ``[2]``; raise :class:`LayoutRejected` if it overlaps."""
        xy = np.asarray(xy, dtype=np.float64)
        if check and not self.is_free(xy, radius, ignore):
            raise LayoutRejected(name)
        self.layout.poses[name] = (float(xy[0]), float(xy[1]), float(yaw))
        self.layout.support_z[name] = support_z
        self.layout.keepouts.append(Keepout(xy, xy, radius, name))
        return xy

    def sample(
        self,
        name: str,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        radius: float,
        yaw_range: tuple[float, float] = (0.0, 0.0),
        tries: int = 100,
    ) -> np.ndarray:
        """Place ``name`` uniformly in a box where it overlaps nothing placed so far."""
        yaw = float(self.rng.uniform(*yaw_range))
        for _ in range(tries):
            xy = np.array([self.rng.uniform(*x_range), self.rng.uniform(*y_range)])
            if self.is_free(xy, radius):
                return self.place(name, xy, radius, yaw, check=False)
        raise LayoutRejected(name)

    def block(self, owner: str, a: np.ndarray, b: np.ndarray, radius: float) -> None:
        """Keep the capsule ``a``-``b`` (``[2]`` each) clear of later items."""
        self.layout.keepouts.append(
            Keepout(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), radius, owner)
        )


def sample_layout(
    rng: np.random.Generator, fill: Callable[[LayoutBuilder], None], max_tries: int = 200
) -> Layout:
    """Call ``fill(builder)`` until it places everything without overlap (deterministic in
    ``rng``)."""
    for _ in range(max_tries):
        builder = LayoutBuilder(rng)
        try:
            fill(builder)
        except LayoutRejected:
            continue
        return builder.layout
    raise RuntimeError(
        f"no valid layout after {max_tries} tries; the layout's ranges are too tight"
    )
