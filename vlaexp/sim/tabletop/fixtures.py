"""Static furniture (plate, bowl, basket, stand, target square) and articulated fixtures
(cabinet with a sliding drawer, push button, knob), as MJCF bodies built from primitives.

Each fixture is one body welded to the world whose origin lies on the table surface at its
footprint centre; the env moves it by rewriting ``model.body_pos`` at reset. Its geoms use the
material ``<fixture>_mat``. Dimensions below are what success predicates and the expert read.
"""

from __future__ import annotations

import numpy as np

PLATE_RADIUS = 0.075
PLATE_TOP = 0.01

BOWL_INNER_RADIUS = 0.06
BOWL_FLOOR = 0.008
BOWL_RIM = 0.04

BASKET_INNER_HALF = 0.08
BASKET_FLOOR = 0.008
BASKET_RIM = 0.06

STAND_HALF = 0.05
STAND_TOP = 0.04

TARGET_HALF = 0.045

# Cabinet: open side faces -y (towards the agentview camera); the drawer slides out along -y.
CABINET_HALF_WIDTH = 0.09
CABINET_HALF_DEPTH = 0.08
CABINET_TOP = 0.13
DRAWER_TRAVEL = 0.13  # joint range [0, DRAWER_TRAVEL], positive = open
DRAWER_INNER_HALF_X = 0.067
DRAWER_INNER_Y = (-0.07, 0.06)  # interior along y in the closed-drawer (cabinet) frame
DRAWER_FLOOR = 0.02
DRAWER_RIM = 0.07
DRAWER_FRONT_TOP = 0.11
HANDLE_POS = (0.0, -0.098, 0.065)  # handle centre in the closed-drawer frame
HANDLE_HALF_X = 0.012

BUTTON_TRAVEL = 0.014  # cap joint range [-BUTTON_TRAVEL, 0]
BUTTON_CAP_RADIUS = 0.02
BUTTON_CAP_TOP = 0.038  # cap top above the table when up

KNOB_GRASP_Z = 0.046  # TCP height that straddles the knob's bar above its collar
KNOB_BAR_TOP = 0.052

# Clearance radius of each fixture seen from above, for layout sampling.
FIXTURE_FOOTPRINT = {
    "plate": PLATE_RADIUS,
    "bowl": BOWL_INNER_RADIUS + 0.008,
    "basket": 0.12,
    "stand": 0.07,
    "target": 0.064,
    "cabinet": 0.12,
    "button": 0.05,
    "knob": 0.04,
}


def _geom(
    gtype: str,
    size: tuple[float, ...],
    pos: tuple[float, ...],
    material: str,
    extra: str = "",
) -> str:
    size_s = " ".join(f"{s:.4f}" for s in size)
    pos_s = " ".join(f"{p:.4f}" for p in pos)
    return f'<geom type="{gtype}" size="{size_s}" pos="{pos_s}" material="{material}" {extra}/>'


def _plate() -> str:
    return _geom("cylinder", (PLATE_RADIUS, PLATE_TOP / 2), (0, 0, PLATE_TOP / 2), "plate_mat")


def _bowl() -> str:
    walls = []
    n = 12
    radius = BOWL_INNER_RADIUS + 0.004
    half_chord = radius * np.tan(np.pi / n) + 0.002
    for i in range(n):
        angle = 2 * np.pi * i / n
        pos = (radius * np.cos(angle), radius * np.sin(angle), BOWL_RIM / 2)
        walls.append(
            _geom(
                "box",
                (0.004, half_chord, BOWL_RIM / 2),
                pos,
                "bowl_mat",
                f'euler="0 0 {np.degrees(angle):.2f}"',
            )
        )
    base = _geom("cylinder", (radius, BOWL_FLOOR / 2), (0, 0, BOWL_FLOOR / 2), "bowl_mat")
    return base + "".join(walls)


def _basket() -> str:
    h = BASKET_RIM / 2
    w = BASKET_INNER_HALF + 0.005
    parts = [
        _geom("box", (w, w, BASKET_FLOOR / 2), (0, 0, BASKET_FLOOR / 2), "basket_mat"),
        _geom("box", (0.005, w + 0.005, h), (w, 0, h), "basket_mat"),
        _geom("box", (0.005, w + 0.005, h), (-w, 0, h), "basket_mat"),
        _geom("box", (w, 0.005, h), (0, w, h), "basket_mat"),
        _geom("box", (w, 0.005, h), (0, -w, h), "basket_mat"),
    ]
    return "".join(parts)


def _stand() -> str:
    return _geom("box", (STAND_HALF, STAND_HALF, STAND_TOP / 2), (0, 0, STAND_TOP / 2), "stand_mat")


def _target() -> str:
    # Painted on the table: seen by the cameras, never touched.
    return _geom(
        "box",
        (TARGET_HALF, TARGET_HALF, 0.0005),
        (0, 0, 0.0005),
        "target_mat",
        'contype="0" conaffinity="0"',
    )


def _cabinet() -> str:
    w, d = CABINET_HALF_WIDTH, CABINET_HALF_DEPTH
    wall_h = CABINET_TOP / 2 - 0.005
    shell = [
        _geom("box", (0.005, d, wall_h), (-w + 0.005, 0, wall_h), "cabinet_mat"),
        _geom("box", (0.005, d, wall_h), (w - 0.005, 0, wall_h), "cabinet_mat"),
        _geom("box", (w, 0.005, wall_h), (0, d - 0.002, wall_h), "cabinet_mat"),
        _geom("box", (w, d, 0.005), (0, 0, CABINET_TOP - 0.005), "cabinet_mat"),
        _geom("box", (w - 0.01, d, 0.005), (0, 0, 0.005), "cabinet_mat"),
    ]
    y0, y1 = DRAWER_INNER_Y
    cy = (y0 + y1) / 2
    half_y = (y1 - y0) / 2 + 0.004
    side_h = (DRAWER_RIM - DRAWER_FLOOR) / 2
    front_h = (DRAWER_FRONT_TOP - 0.012) / 2
    drawer = [
        _geom("box", (0.075, half_y, 0.004), (0, cy, DRAWER_FLOOR - 0.004), "drawer_mat"),
        _geom("box", (0.004, half_y, side_h), (-0.071, cy, DRAWER_FLOOR + side_h), "drawer_mat"),
        _geom("box", (0.004, half_y, side_h), (0.071, cy, DRAWER_FLOOR + side_h), "drawer_mat"),
        _geom("box", (0.075, 0.004, side_h), (0, y1 + 0.004, DRAWER_FLOOR + side_h), "drawer_mat"),
        _geom("box", (0.078, 0.005, front_h), (0, y0 - 0.005, 0.012 + front_h), "drawer_mat"),
        _geom("box", (HANDLE_HALF_X, 0.018, 0.01), HANDLE_POS, "handle_mat"),
    ]
    return (
        "".join(shell)
        + '<body name="drawer">'
        + f'<joint name="drawer" type="slide" axis="0 -1 0" range="0 {DRAWER_TRAVEL}" '
        'damping="3" frictionloss="0.5" armature="0.05"/>' + "".join(drawer) + "</body>"
    )


def _button() -> str:
    base = _geom("box", (0.035, 0.035, 0.01), (0, 0, 0.01), "button_base_mat")
    cap_half = 0.01
    # The cap latches where it is pushed (joint friction, weight compensated so it does not
    # creep down on its own), so "pressed" is a state that persists.
    cap = (
        f'<body name="button_cap" pos="0 0 {BUTTON_CAP_TOP - cap_half:.4f}" gravcomp="1">'
        f'<joint name="button" type="slide" axis="0 0 1" range="{-BUTTON_TRAVEL} 0" '
        'damping="2" frictionloss="0.6"/>'
        + _geom("cylinder", (BUTTON_CAP_RADIUS, cap_half), (0, 0, 0), "button_mat")
        + "</body>"
    )
    return base + cap


def _knob() -> str:
    base = _geom("cylinder", (0.032, 0.004), (0, 0, 0.004), "knob_base_mat")
    bar_half_z = (KNOB_BAR_TOP - 0.028) / 2
    knob = (
        '<body name="knob_dial" pos="0 0 0.008">'
        '<joint name="knob" type="hinge" axis="0 0 1" damping="0.002" frictionloss="0.01" '
        'armature="0.0005"/>'
        + _geom("cylinder", (0.018, 0.01), (0, 0, 0.01), "knob_mat")
        + _geom("box", (0.007, 0.028, bar_half_z), (0, 0, 0.02 + bar_half_z), "knob_mat")
        + _geom(
            "box",
            (0.0035, 0.01, 0.001),
            (0, 0.016, KNOB_BAR_TOP - 0.008 + 0.0005),
            "white_mat",
            'contype="0" conaffinity="0"',
        )
        + "</body>"
    )
    return base + knob


_BUILDERS = {
    "plate": _plate,
    "bowl": _bowl,
    "basket": _basket,
    "stand": _stand,
    "target": _target,
    "cabinet": _cabinet,
    "button": _button,
    "knob": _knob,
}

FIXTURE_COLORS = {
    "plate": (0.93, 0.93, 0.9, 1.0),
    "bowl": (0.15, 0.15, 0.17, 1.0),
    "basket": (0.62, 0.45, 0.25, 1.0),
    "stand": (0.45, 0.3, 0.18, 1.0),
    "target": (0.2, 0.75, 0.3, 1.0),
    "cabinet": (0.7, 0.62, 0.5, 1.0),
    "drawer": (0.78, 0.7, 0.56, 1.0),
    "handle": (0.25, 0.25, 0.27, 1.0),
    "button": (0.85, 0.1, 0.1, 1.0),
    "button_base": (0.3, 0.3, 0.32, 1.0),
    "knob": (0.2, 0.2, 0.22, 1.0),
    "knob_base": (0.6, 0.6, 0.62, 1.0),
}

# Which materials each fixture uses (for colour perturbations).
FIXTURE_MATERIALS = {
    "plate": ("plate",),
    "bowl": ("bowl",),
    "basket": ("basket",),
    "stand": ("stand",),
    "target": ("target",),
    "cabinet": ("cabinet", "drawer", "handle"),
    "button": ("button", "button_base"),
    "knob": ("knob", "knob_base"),
}

# Pairs of bodies that overlap by design (sliding or turning parts inside their housing).
FIXTURE_EXCLUDES = {
    "button": (("button", "button_cap"),),
    "knob": (("knob", "knob_dial"),),
}


def fixture_body_xml(name: str) -> str:
    """The ``<body>`` of one fixture at the origin (moved at reset)."""
    return f'<body name="{name}">{_BUILDERS[name]()}</body>'
