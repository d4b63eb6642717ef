#!/usr/bin/env bash
# experiments/tabletop_spatial on the GPU machine (device tool): collect, then train Pi0.5 and
# Pi0 (small widths) side by side on the one GPU, evaluate each in closed loop. Prepare here:
#   .whl/run: hydra-core, omegaconf, antlr4 (pip wheel), lerobot 0.4.4, datasets, dill,
#             multiprocess, typing-extensions, av, mujoco, PyOpenGL (Python 3.12 wheels)
#   .whl/np:  numpy 2.2.6 (datasets cannot write LeRobot's shape-(1,) features under the
#             image's numpy 2.5)     .gl: the glvnd loader debs (benchmarks/device/tabletop_gpu.sh)
# The two wheel sets together pass the 64 MiB a call carries: install .whl/run (and unpack .gl)
# in one call, then run this in the next one with .whl/np carried, while the machine is warm:
#   pip install --no-index --no-deps --target /tmp/site .whl/run/*.whl   (call 1)
#   bash benchmarks/device/tabletop_spatial_gpu.sh "[0,1]" 00:00:02:45 4000   (call 2)
set -u -o pipefail
TASKS=${1:-"[0,1]"} MAX_TIME=${2:-00:00:02:45} MAX_STEPS=${3:-4000}
test -d /tmp/site/lerobot || { echo "install .whl/run into /tmp/site first"; exit 3; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/np .whl/np/*.whl || exit 1
mkdir -p /tmp/gl && for f in .gl/*.deb; do dpkg -x "$f" /tmp/gl; done
# two jobs and their spawned loader workers on 16 cores: without a thread cap, OpenMP
# oversubscription stalled training to seconds per step
export OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1 MUJOCO_GL=egl WANDB_MODE=disabled
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONFAULTHANDLER=1
export PYTHONPATH=/tmp/np:/tmp/site:$PWD LD_LIBRARY_PATH=/tmp/gl/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
OUT=${OUT:-/tmp/out}; R=/tmp/runs; mkdir -p $R $OUT; S=$(date +%s)
COMMON="+experiment=tabletop_spatial paths.root_dir=$R print_config=false data.collect.use_videos=false
 trainer.log_every_n_steps=50 eval.n_videos=0 data.collect.task_ids=$TASKS eval.task_ids=$TASKS"
timeout 200 python3 -m vlaexp $COMMON "stages=[collect]" 2>&1 | grep -E "expert successes|Built|rror"
echo "collect done after $(( $(date +%s) - S )) s"
# every thread's stack each 60 s, to a file per job: shows where a stalled job is
RUN='import faulthandler, runpy, sys; faulthandler.dump_traceback_later(60, repeat=True, file=open(sys.argv.pop(1), "w")); runpy.run_module("vlaexp", run_name="__main__", alter_sys=True)'
for p in pi05_small pi0_small; do
  timeout -s KILL 330 python3 -c "$RUN" $R/$p.stacks $COMMON policy=$p \
    trainer.max_time=$MAX_TIME trainer.max_steps=$MAX_STEPS > $R/$p.log 2>&1 &
done; wait
echo "train+eval done after $(( $(date +%s) - S )) s"
for p in pi05_small pi0_small; do
  d=$(ls -d $R/outputs/tabletop_spatial/*/*_$p | tail -1)
  cp $R/$p.log $OUT/; cp $d/eval/eval_info.json $OUT/${p}_eval_info.json; cp $d/csv/metrics.csv $OUT/${p}_metrics.csv
  python3 -c "import json; d=json.load(open('$OUT/${p}_eval_info.json')); print('$p', d['aggregated'], d['per_task'])"
done
