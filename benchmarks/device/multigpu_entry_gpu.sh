#!/usr/bin/env bash
# Issue 9 on 2 GPUs (device tool, nvidia-h100-x2 or nvidia-h200-x2): the trainer=ddp and
# trainer=fsdp presets from the entry point, as a user runs them: the quickstart experiment
# (collect tabletop demos, train the tiny Pi0.5, evaluate, report) with trainer.devices=2.
# Lightning starts the second rank by re-running the command line. Prints, per preset, the
# stages each rank ran, the run dir's checkpoints, run.json and job status, and the eval
# success; one tar.gz per preset comes back. Carry .whl/dist (benchmarks/device/env.sh lists
# the wheels) and .gl.
#   STEPS=60 bash benchmarks/device/multigpu_entry_gpu.sh
set -u -o pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
S=$(date +%s)
WHEELS=.whl/dist source benchmarks/device/env.sh || exit 1
OUT=${OUT:-/tmp/out}; R=/tmp/runs; mkdir -p $R $OUT
COMMON="+experiment=quickstart paths.root_dir=$R print_config=false logger=csv
 data.collect.use_videos=false eval.n_videos=0 policy.dtype=float32 trainer.devices=2
 trainer.max_steps=${STEPS:-60} trainer.val_check_interval=30 callbacks.step_checkpoint.save_freq=30"
timeout ${COLLECT_S:-150} python3 -m vlaexp $COMMON "stages=[collect]" 2>&1 | grep -E "Built|Reusing|rror"
echo "== $(( $(date +%s) - S )) s: collected"
for t in ${PRESETS:-ddp fsdp}; do
  timeout ${RUN_S:-170} python3 -m vlaexp $COMMON trainer=$t hydra.run.dir=$R/$t \
    "stages=[collect,train,eval,report]" > $R/$t.log 2>&1
  echo "== $(( $(date +%s) - S )) s: trainer=$t exit $?"
  grep -aE "Stage |rank 1|Done:|Error|rror:|Initializing distributed|pc_success" $R/$t.log | cut -c1-220 | tail -14
  ls $R/$t/checkpoints; python3 - <<PY
import json
print("launches:", len(json.load(open("$R/$t/run.json"))["launches"]))
print("status:", json.load(open("$R/$t/job_status.json"))["status"])
print("eval:", json.load(open("$R/$t/eval/eval_info.json"))["aggregated"])
PY
  tar -czf $OUT/$t.tar.gz -C $R $t.log $t/run.json $t/job_status.json $t/eval/eval_info.json $t/csv 2>/dev/null
done
echo "== $(( $(date +%s) - S )) s: done"
