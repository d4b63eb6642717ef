#!/usr/bin/env bash
# The tabletop suites on the GPU machine (device tool), with nothing but this project, the
# mujoco wheel and its pure-Python EGL binding. Prepare here, once:
#   mkdir -p .whl/sim && pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d .whl/sim mujoco==3.8.1 glfw PyOpenGL==3.1.9
#   (glvnd loader debs into .gl/, as the device README says)
# then run it with carry [".whl", ".gl"]:  bash benchmarks/device/tabletop_gpu.sh
# The image has NVIDIA's EGL vendor library but no glvnd loader (libEGL.so.1): the debs are
# unpacked into a private directory (unpacking them into / made machines hang, DESIGN.md).
set -u
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/sim/*.whl || exit 1
mkdir -p /tmp/gl && for f in .gl/*.deb; do dpkg -x "$f" /tmp/gl; done
export PYTHONPATH=/tmp/site:$PWD
export LD_LIBRARY_PATH=/tmp/gl/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
nvidia-smi -L
timeout 300 python3 -m vlaexp.sim.tabletop.evaluate_experts --suites spatial object goal long \
    --episodes 10 --out "$OUT/tabletop_experts_gpu" | tail -8
timeout 300 python3 benchmarks/bench_tabletop.py --repeats 3 --out "$OUT/tabletop_speed_gpu" | tail -8
