"""Camera images of a robosuite scene through ``mujoco.Renderer``.

robosuite's own offscreen path ran about 4 env steps/s with two cameras on these CPU
machines (Mesa software GL); rendering the same ``MjModel``/``MjData`` with a plain
``mujoco.Renderer``, shadows and reflections off, is about 10x faster. Its images are
upright already (the renderer flips OpenGL's bottom-up rows), unlike robosuite's "opengl"
convention that LIBERO consumers flip by 180 degrees.
"""

from __future__ import annotations

from collections.abc import Mapping

import mujoco
import numpy as np

# robosuite puts collision geoms in group 0 and visual geoms in group 1; draw only the latter.
_COLLISION_GROUP = 0


class CameraRenderer:
    """Renders named cameras of one model to uint8[resolution, resolution, 3] RGB images.

    Args:
        model: the scene's ``MjModel`` (robosuite 1.4: ``env.sim.model._model``).
        data: its ``MjData`` (``env.sim.data._data``).
        cameras: our camera name -> the model's camera name, e.g. ``{"wrist": "robot0_eye_in_hand"}``.
        resolution: square image side in pixels.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        cameras: Mapping[str, str],
        resolution: int,
    ) -> None:
        # The GL framebuffer must hold the image; robosuite models default to 640x480.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, resolution)
        model.vis.global_.offheight = max(model.vis.global_.offheight, resolution)
        self._data = data
        self._camera_ids = {ours: model.camera(theirs).id for ours, theirs in cameras.items()}
        try:
            self._renderer: mujoco.Renderer | None = mujoco.Renderer(model, resolution, resolution)
        except mujoco.FatalError as e:
            raise RuntimeError(
                f"cannot create an offscreen OpenGL context ({e}). mujoco picks its GL backend "
                "when first imported: set MUJOCO_GL=egl (or osmesa) in the environment, or "
                "import vlaexp.sim.robosuite before anything imports mujoco"
            ) from e
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._option = mujoco.MjvOption()
        self._option.geomgroup[_COLLISION_GROUP] = False

    def render(self) -> dict[str, np.ndarray]:
        """``{camera: uint8[resolution, resolution, 3]}`` of the current simulator state."""
        if self._renderer is None:
            raise RuntimeError("the renderer is closed")
        images = {}
        for name, cam_id in self._camera_ids.items():
            self._renderer.update_scene(self._data, camera=cam_id, scene_option=self._option)
            images[name] = self._renderer.render()
        return images

    def close(self) -> None:
        """Free the GL context; safe to call twice."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
