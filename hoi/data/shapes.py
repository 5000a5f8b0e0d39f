"""Tool and target categories built from surface primitives, sampled as point clouds.

Every object lives in its own frame. Tools are held in a fist around a handle whose axis is
the frame's y axis through the origin (the *grip frame*); the head extends towards +y, parts
that work on the target face -z (the side the fingertips close on). Targets sit on the table
with their base at z = 0 and their centre on the z axis. Units are metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------------------
# Primitives: area + area-uniform samples with outward normals
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A primitive surface in object coordinates, with its colour (RGB in [0, 1])."""

    kind: str  # "box", "cylinder", "ellipsoid", "bowl", "cup"
    centre: tuple[float, float, float]
    size: tuple[float, float, float]  # box: full extents; cylinder/cup: (r, r, height);
    #                                   ellipsoid: semi-axes; bowl: (radius, radius, depth)
    colour: tuple[float, float, float]
    axis: int = 2  # cylinder/cup axis (0 = x, 1 = y, 2 = z)

    def area(self) -> float:
        a, b, c = self.size
        if self.kind == "box":
            return 2 * (a * b + b * c + a * c)
        if self.kind == "cylinder":
            return 2 * np.pi * a * c + 2 * np.pi * a * a
        if self.kind == "cup":  # open top: wall inside and out, base
            return 4 * np.pi * a * c + np.pi * a * a
        if self.kind == "bowl":  # half ellipsoid, inside and out
            return 2 * 2 * np.pi * a * a * (0.5 + 0.5 * c / a)
        p = 1.6075  # ellipsoid: Knud Thomsen's approximation
        return 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(points (n, 3), outward normals (n, 3)) uniformly over the surface."""
        pts, nrm = getattr(self, f"_sample_{self.kind}")(n, rng)
        return pts + np.asarray(self.centre), nrm

    def _sample_box(self, n, rng):
        ext = np.asarray(self.size) / 2
        faces = np.array([ext[1] * ext[2], ext[0] * ext[2], ext[0] * ext[1]])
        axis = rng.choice(3, size=n, p=faces / faces.sum())
        sign = rng.choice([-1.0, 1.0], size=n)
        pts = rng.uniform(-1, 1, size=(n, 3)) * ext
        pts[np.arange(n), axis] = sign * ext[axis]
        nrm = np.zeros((n, 3))
        nrm[np.arange(n), axis] = sign
        return pts, nrm

    def _circle(self, n, rng, radius):
        t = rng.uniform(0, 2 * np.pi, n)
        return radius * np.cos(t), radius * np.sin(t), np.cos(t), np.sin(t)

    def _orient(self, pts, nrm):
        """Local frames sample with the axis along z; rotate z onto self.axis."""
        order = {0: [2, 0, 1], 1: [1, 2, 0], 2: [0, 1, 2]}[self.axis]
        return pts[:, order], nrm[:, order]

    def _sample_cylinder(self, n, rng):
        r, _, h = self.size
        side = rng.random(n) < (h / (h + r))  # side area 2 pi r h vs caps 2 pi r^2
        x, y, cx, cy = self._circle(n, rng, r)
        z = rng.uniform(-h / 2, h / 2, n)
        disc = np.sqrt(rng.random(n))
        cap = rng.choice([-1.0, 1.0], n)
        pts = np.where(side[:, None], np.stack([x, y, z], 1),
                       np.stack([x * disc, y * disc, cap * h / 2], 1))
        nrm = np.where(side[:, None], np.stack([cx, cy, 0 * z], 1),
                       np.stack([0 * x, 0 * y, cap], 1))
        return self._orient(pts, nrm)

    def _sample_cup(self, n, rng):
        r, _, h = self.size
        base = rng.random(n) < r / (4 * h + r)
        inside = rng.random(n) < 0.5
        x, y, cx, cy = self._circle(n, rng, r)
        z = rng.uniform(0, h, n)
        disc = np.sqrt(rng.random(n))
        s = np.where(inside, -1.0, 1.0)
        pts = np.where(base[:, None], np.stack([x * disc, y * disc, 0 * z + 0.002], 1),
                       np.stack([x, y, z], 1))
        nrm = np.where(base[:, None], np.stack([0 * x, 0 * y, 0 * z + 1], 1),
                       np.stack([s * cx, s * cy, 0 * z], 1))
        return self._orient(pts, nrm)

    def _sample_bowl(self, n, rng):
        r, _, depth = self.size
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        v[:, 2] = -np.abs(v[:, 2])  # lower half: the bowl opens upwards
        inside = rng.random(n) < 0.5
        pts = v * np.array([r, r, depth]) + np.array([0, 0, depth])
        nrm = v / np.array([r, r, depth])
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        nrm = np.where(inside[:, None], -nrm, nrm)
        return pts, nrm

    def _sample_ellipsoid(self, n, rng):
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        axes = np.asarray(self.size)
        nrm = v / axes
        return v * axes, nrm / np.linalg.norm(nrm, axis=1, keepdims=True)


def sample_parts(parts: list[Part], n: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n points over a set of parts, area-weighted: (points, normals, colours), each (n, 3)."""
    areas = np.array([p.area() for p in parts])
    counts = rng.multinomial(n, areas / areas.sum())
    pts, nrm, col = [], [], []
    for part, k in zip(parts, counts, strict=True):
        p, q = part.sample(int(k), rng)
        pts.append(p)
        nrm.append(q)
        col.append(np.broadcast_to(np.asarray(part.colour), (int(k), 3)))
    return np.concatenate(pts), np.concatenate(nrm), np.concatenate(col)


# ---------------------------------------------------------------------------------------------
# Categories
# ---------------------------------------------------------------------------------------------

WOOD, STEEL, BLACK = (0.62, 0.42, 0.24), (0.74, 0.76, 0.80), (0.12, 0.12, 0.14)


@dataclass(frozen=True)
class Tool:
    """A tool in its grip frame: parts, handle radius (for the grasp) and working point."""

    parts: list[Part]
    handle_radius: float
    work_point: tuple[float, float, float]


@dataclass(frozen=True)
class Target:
    """A target on the table: parts, top height, and the rim/edge the left hand holds."""

    parts: list[Part]
    height: float
    inner_bottom: float  # height of the inside floor (where stirring/scooping happens)
    half_width: float  # distance from the centre to the held edge along -x
    rim_radius: float  # thickness of what the left hand closes on


def make_tool(name: str, s: float, colour: tuple[float, float, float]) -> Tool:
    """Tool `name` scaled by `s` (about 1), head parts in the category colour `colour`."""
    cyl, box, ell = "cylinder", "box", "ellipsoid"
    if name == "spoon":
        return Tool([Part(cyl, (0, 0.02 * s, 0), (0.006 * s, 0, 0.16 * s), WOOD, axis=1),
                     Part(ell, (0, 0.13 * s, -0.004 * s), (0.02 * s, 0.03 * s, 0.008 * s), colour)],
                    0.006 * s, (0, 0.13 * s, -0.008 * s))
    if name == "knife":
        return Tool([Part(box, (0, 0, 0), (0.012 * s, 0.10 * s, 0.02 * s), BLACK),
                     Part(box, (0, 0.11 * s, -0.008 * s), (0.003 * s, 0.12 * s, 0.032 * s), colour)],
                    0.01 * s, (0, 0.11 * s, -0.024 * s))
    if name == "brush":
        return Tool([Part(cyl, (0, 0.01 * s, 0), (0.008 * s, 0, 0.14 * s), WOOD, axis=1),
                     Part(box, (0, 0.10 * s, -0.004 * s), (0.035 * s, 0.045 * s, 0.018 * s), colour)],
                    0.008 * s, (0, 0.10 * s, -0.014 * s))
    if name == "spatula":
        return Tool([Part(cyl, (0, 0.015 * s, 0), (0.007 * s, 0, 0.15 * s), BLACK, axis=1),
                     Part(box, (0, 0.13 * s, -0.004 * s), (0.055 * s, 0.08 * s, 0.003 * s), colour)],
                    0.007 * s, (0, 0.16 * s, -0.006 * s))
    if name == "hammer":
        return Tool([Part(cyl, (0, 0.045 * s, 0), (0.011 * s, 0, 0.19 * s), WOOD, axis=1),
                     Part(box, (0, 0.15 * s, -0.01 * s), (0.03 * s, 0.03 * s, 0.09 * s), colour)],
                    0.011 * s, (0, 0.15 * s, -0.055 * s))
    if name == "kettle":  # handle upright along y; body beyond the fingertips (-z), spout further
        r = 0.055 * s
        return Tool([Part(cyl, (0, 0, 0), (0.01 * s, 0, 0.10 * s), BLACK, axis=1),
                     Part(cyl, (0, -0.01 * s, -(0.035 * s + r)), (r, 0, 0.13 * s), colour, axis=1),
                     Part(cyl, (0, 0.04 * s, -(0.05 * s + 2 * r)), (0.01 * s, 0, 0.05 * s), colour,
                          axis=2)],
                    0.01 * s, (0, 0.05 * s, -(0.075 * s + 2 * r)))
    raise KeyError(f"unknown tool {name!r}")


def make_target(name: str, s: float, colour: tuple[float, float, float]) -> Target:
    """Target `name` scaled by `s` (about 1) in the category colour."""
    if name == "bowl":
        r, d = 0.085 * s, 0.06 * s
        return Target([Part("bowl", (0, 0, 0), (r, r, d), colour)], d, 0.01 * s, r, 0.006)
    if name == "plate":
        r, h = 0.11 * s, 0.015 * s
        return Target([Part("cylinder", (0, 0, h / 2), (r, r, h), colour)], h, h, r, h / 2)
    if name == "board":
        w, dp, h = 0.26 * s, 0.17 * s, 0.02 * s
        return Target([Part("box", (0, 0, h / 2), (w, dp, h), colour)], h, h, w / 2, h / 2)
    if name == "box":
        w, dp, h = 0.13 * s, 0.11 * s, 0.08 * s
        return Target([Part("box", (0, 0, h / 2), (w, dp, h), colour)], h, h, w / 2, 0.008)
    if name == "cup":
        r, h = 0.042 * s, 0.09 * s
        return Target([Part("cup", (0, 0, 0), (r, r, h), colour)], h, 0.01 * s, r, 0.005)
    if name == "pan":
        r, h = 0.10 * s, 0.045 * s
        return Target([Part("cup", (0, 0, 0), (r, r, h), colour),
                       Part("cylinder", (r + 0.07 * s, 0, h * 0.8), (0.01 * s, 0, 0.14 * s), BLACK,
                            axis=0)],
                      h, 0.006 * s, r, 0.005)
    raise KeyError(f"unknown target {name!r}")


# Category colours: distinct hues, so the first frame shows which tool and target are used.
TOOL_COLOURS = {
    "spoon": (0.86, 0.86, 0.90), "knife": (0.30, 0.75, 0.75), "brush": (0.20, 0.55, 0.90),
    "spatula": (0.90, 0.35, 0.20), "hammer": (0.30, 0.30, 0.34), "kettle": (0.85, 0.15, 0.20),
}
TARGET_COLOURS = {
    "bowl": (0.95, 0.85, 0.30), "plate": (0.95, 0.95, 0.92), "board": (0.78, 0.58, 0.35),
    "box": (0.35, 0.70, 0.35), "cup": (0.30, 0.45, 0.85), "pan": (0.25, 0.25, 0.28),
}
