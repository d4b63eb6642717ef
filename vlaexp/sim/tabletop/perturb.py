"""Scene perturbations for out-of-distribution data: object and fixture colours and textures,
table colour or texture, lighting, agentview pose jitter, and distractor objects.

All of them are drawn at reset from a generator seeded by the episode seed, and none of them
moves a task object, so a perturbed episode poses the same task as the clean one.
"""

from __future__ import annotations

import mujoco
import numpy as np

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.sim.tabletop.fixtures import FIXTURE_MATERIALS
from vlaexp.sim.tabletop.layout import Layout, LayoutBuilder, LayoutRejected
from vlaexp.sim.tabletop.objects import COLORS, OBJECT_KINDS, ObjectKind
from vlaexp.sim.tabletop.rotations import axis_angle_to_quat, quat_mul
from vlaexp.sim.tabletop.scene import TABLE_TEXTURES, SceneSpec

# Distractors are drawn from the shapes a scene does not already use, in this order; round
# shapes come last because they could roll.
_DISTRACTOR_ORDER = (
    "block",
    "can",
    "puck",
    "mug",
    "brick",
    "bar",
    "cube",
    "cylinder",
    "capsule",
    "ball",
)
DISTRACTOR_X = (-0.36, 0.36)
DISTRACTOR_Y = (-0.24, 0.3)


def distractor_kinds(scene: SceneSpec, n: int) -> tuple[ObjectKind, ...]:
    """``n`` distractor shapes, preferring ones that look unlike the scene's objects."""
    if n < 0:
        raise ValueError(f"distractors={n} must be >= 0")
    used = {o.kind.noun for o in scene.objects}
    order = [k for k in _DISTRACTOR_ORDER if k not in used] or list(_DISTRACTOR_ORDER)
    return tuple(OBJECT_KINDS[order[i % len(order)]] for i in range(n))


def place_distractors(
    layout: Layout, kinds: tuple[ObjectKind, ...], rng: np.random.Generator
) -> list[tuple[str, tuple[float, float, float]]]:
    """Spots ``(name, (x, y, yaw))`` for distractors clear of everything ``layout`` keeps out
    (objects, fixtures, push paths, the drawer's travel)."""
    if not kinds:
        return []
    for _ in range(50):
        builder = LayoutBuilder(rng)
        builder.layout.keepouts = list(layout.keepouts)
        try:
            for i, kind in enumerate(kinds):
                builder.sample(
                    f"distractor_{i}", DISTRACTOR_X, DISTRACTOR_Y, kind.footprint, (-np.pi, np.pi)
                )
        except LayoutRejected:
            continue
        return [
            (f"distractor_{i}", builder.layout.poses[f"distractor_{i}"]) for i in range(len(kinds))
        ]
    raise RuntimeError(
        f"{len(kinds)} distractors do not fit on the table beside this task's layout"
    )


class ScenePerturber:
    """Remembers the model's nominal look and re-draws the perturbed one at every reset."""

    def __init__(self, model: mujoco.MjModel, spec: SceneSpec, cfg: PerturbationConfig) -> None:
        if cfg.lighting < 0 or cfg.camera_jitter < 0:
            raise ValueError(
                f"lighting={cfg.lighting} and camera_jitter={cfg.camera_jitter} must be >= 0"
            )
        self.model = model
        self.cfg = cfg
        m = model
        self._nominal = {
            "mat_rgba": m.mat_rgba.copy(),
            "geom_matid": m.geom_matid.copy(),
            "light_diffuse": m.light_diffuse.copy(),
            "light_dir": m.light_dir.copy(),
            "headlight_ambient": m.vis.headlight.ambient.copy(),
            "cam_pos": m.cam_pos.copy(),
            "cam_quat": m.cam_quat.copy(),
        }
        self._agentview = m.camera("agentview").id
        self._table = m.geom("table").id
        movable = [o.name for o in spec.objects]
        self._distractors = [f"distractor_{i}" for i in range(len(spec.distractors))]
        # Each recolourable thing: (plain material id, textured twin id or -1, its geom ids).
        self._recolour: list[tuple[int, int, np.ndarray]] = []
        for name in movable + self._distractors:
            geoms = np.flatnonzero(m.geom_bodyid == m.body(name).id)
            tex = m.material(f"{name}_tex_mat").id if spec.object_textures else -1
            self._recolour.append((m.material(f"{name}_mat").id, tex, geoms))
        self._fixture_mats = [
            m.material(f"{mat}_mat").id for f in spec.fixtures for mat in FIXTURE_MATERIALS[f]
        ]
        self._distractor_mats = [m.material(f"{n}_mat").id for n in self._distractors]
        self._table_mats = (
            [m.material(f"table_tex_{i}_mat").id for i in range(len(TABLE_TEXTURES))]
            if spec.table_textures
            else []
        )

    def apply(self, rng: np.random.Generator) -> None:
        """Restore the nominal look, then draw each enabled perturbation from ``rng``."""
        m, nom, cfg = self.model, self._nominal, self.cfg
        m.mat_rgba[:] = nom["mat_rgba"]
        m.geom_matid[:] = nom["geom_matid"]
        m.light_diffuse[:] = nom["light_diffuse"]
        m.light_dir[:] = nom["light_dir"]
        m.vis.headlight.ambient[:] = nom["headlight_ambient"]
        m.cam_pos[:] = nom["cam_pos"]
        m.cam_quat[:] = nom["cam_quat"]
        palette = np.array(list(COLORS.values()))
        for mat in self._distractor_mats:
            m.mat_rgba[mat] = palette[rng.integers(len(palette))]
        if cfg.object_colors:
            for mat, tex, geoms in self._recolour:
                rgba = np.append(rng.uniform(0.05, 0.95, 3), 1.0)
                m.mat_rgba[mat] = rgba
                if tex >= 0 and rng.random() < 0.5:
                    m.mat_rgba[tex] = rgba
                    m.geom_matid[geoms] = tex
            for mat in self._fixture_mats:
                m.mat_rgba[mat] = np.append(rng.uniform(0.05, 0.95, 3), 1.0)
        if cfg.table_texture:
            choice = int(rng.integers(len(self._table_mats) + 1))
            tint = np.append(rng.uniform(0.4, 1.0, 3), 1.0)
            if choice == len(self._table_mats):  # a plain colour
                m.mat_rgba[m.geom_matid[self._table]] = tint
            else:
                m.geom_matid[self._table] = self._table_mats[choice]
                m.mat_rgba[self._table_mats[choice]] = tint
        if cfg.lighting > 0:
            s = cfg.lighting
            m.light_diffuse[:] = np.clip(nom["light_diffuse"] * rng.uniform(1 - s, 1 + s), 0, 1)
            m.vis.headlight.ambient[:] = np.clip(
                nom["headlight_ambient"] * rng.uniform(1 - s, 1 + s), 0, 1
            )
            for i in range(m.nlight):
                turn = axis_angle_to_quat(rng.uniform(-s, s, 3))
                mat = np.zeros(9)
                mujoco.mju_quat2Mat(mat, turn)
                m.light_dir[i] = mat.reshape(3, 3) @ nom["light_dir"][i]
        if cfg.camera_jitter > 0:
            j, cam = cfg.camera_jitter, self._agentview
            m.cam_pos[cam] = nom["cam_pos"][cam] + rng.uniform(-j, j, 3)
            m.cam_quat[cam] = quat_mul(
                axis_angle_to_quat(rng.uniform(-j, j, 3)), nom["cam_quat"][cam]
            )
