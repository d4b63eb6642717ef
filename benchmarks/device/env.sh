# Sourced by the device scripts that run vlaexp's entry point on the GPU machine: installs
# the carried wheels (WHEELS, default .whl/dist, 30 MB: hydra-core, omegaconf, antlr4,
# lightning, lerobot 0.4.4, datasets, dill, multiprocess, typing-extensions, mujoco, PyOpenGL,
# numpy 2.2.6, vector-quantize-pytorch and its einops / einx / frozendict / loguru /
# torch-einops-utils; Python 3.12 wheels) into /tmp/site, a PyAV stand-in, and the carried
# glvnd loader debs (.gl) for MuJoCo's EGL rendering; exports the environment. Prepare them here:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_28_x86_64 -d .whl/dist hydra-core==1.3.8 omegaconf==2.3.1 \
#     lightning==2.6.6 lerobot==0.4.4 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 \
#     typing-extensions==4.16.0 mujoco==3.8.1 pyopengl==3.1.10 numpy==2.2.6 \
#     vector-quantize-pytorch==1.32.0 einops==0.8.2 einx==0.4.3 frozendict==2.5.1 loguru==0.7.3 \
#     torch-einops-utils==0.2.0
#   pip wheel --no-deps -w .whl/dist antlr4-python3-runtime==4.9.3   # an sdist only
# and carry [".whl/dist", ".gl"] (64 MiB at most together).
#
# PyAV's 40 MB wheel would not fit beside them. LeRobot imports `av` when it loads, and these
# runs record and read PNG frames only (use_videos=false), so a stand-in module that fails
# loudly on any use takes its place.
if ! test -d /tmp/site/lerobot; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site ${WHEELS:-.whl/dist}/*.whl || exit 1
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
# the dataset a vlaexp run's log says it built or reused (the cache logs both, also after
# waiting on another job's build): log_dataset <log file>
log_dataset() { grep -aoE "(Built|Reusing cached) datasets [^ ]+" "$1" | tail -1 | awk '{print $NF}'; }
