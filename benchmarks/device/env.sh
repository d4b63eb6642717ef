# Sourced by the device scripts that run vlaexp's entry point on the GPU machine: installs
# the carried wheels (WHEELS, default .whl/gpu: hydra-core, omegaconf, antlr4, lightning,
# lerobot 0.4.4, datasets, dill, multiprocess, typing-extensions, mujoco, PyOpenGL, numpy
# 2.2.6, Python 3.12 wheels) into /tmp/site, a PyAV stand-in, and the carried glvnd loader
# debs (.gl) for MuJoCo's EGL rendering; exports the environment.
#
# PyAV's 40 MB wheel would not fit beside them. LeRobot imports `av` when it loads, and these
# runs record and read PNG frames only (use_videos=false), so a stand-in module that fails
# loudly on any use takes its place.
if ! test -d /tmp/site/lerobot; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site ${WHEELS:-.whl/gpu}/*.whl || exit 1
  mkdir -p /tmp/site/av && cat > /tmp/site/av/__init__.py <<'PY'
"""Stand-in for PyAV on the GPU machine: LeRobot imports av when it loads; PNG-frame datasets never use it."""
import logging as _logging


class _Logging:
    WARNING, ERROR = _logging.WARNING, _logging.ERROR

    @staticmethod
    def restore_default_callback():
        pass

    @staticmethod
    def set_level(*_):
        pass


logging = _Logging()


def __getattr__(name):  # ImportError: torchvision.io treats PyAV as absent on it
    raise ImportError(f"av.{name}: PyAV is not installed here (this run uses PNG frames only)")
PY
fi
test -d /tmp/gl/usr || { mkdir -p /tmp/gl && for f in .gl/*.deb; do dpkg -x "$f" /tmp/gl; done; }
# two jobs and their spawned loader workers on 16 cores: without a thread cap, OpenMP
# oversubscription stalled training to seconds per step
export OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1 MUJOCO_GL=egl WANDB_MODE=disabled
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONFAULTHANDLER=1
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=/tmp/gl/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
