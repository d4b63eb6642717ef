#!/usr/bin/env bash
# Issue 9 on nvidia-h200-x2 (device tool): FSDP checkpoints (save on 2 GPUs, load on one,
# resume), then full-size Pi0.5's training step on 1 GPU, 2 GPUs with DDP and 2 GPUs with
# FSDP, same batch per GPU, side by side in one call (experiments/scaling). Carry .whl/dist:
# lightning, hydra-core, omegaconf, antlr4 (the image has torch, transformers, the rest).
#   BATCH=8 bash benchmarks/device/scaling_gpu.sh
set -u -o pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
S=$(date +%s) OUT=${OUT:-/tmp/out} B=${BATCH:-8}
mkdir -p $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/dist/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi -L
run() {
  local name=$1; shift
  echo "== $(( $(date +%s) - S )) s: $name $*"
  timeout ${RUN_S:-200} python3 benchmarks/bench_scaling.py --name $name "$@" 2>&1 \
    | grep -v -i -E "warn|tip:|litlogger" | tail -${LINES_SHOWN:-6}
  cp benchmarks/results/$name.* $OUT/ 2>/dev/null
}
test -n "${SKIP_CKPT:-}" || run fsdp_checkpoint --policy pi05_tiny --trainer fsdp --devices 2 --batch 2 --steps 2 --warmup 1 --check-checkpoint
# RUNS: trainer:devices[:name suffix:override] (an override without spaces)
for spec in ${RUNS:-gpu:1 ddp:2 fsdp:2}; do
  IFS=: read -r t d suffix override <<<"$spec"
  run scaling_pi05_$t$d${suffix:+_$suffix} --trainer $t --devices $d --batch $B ${override:-}
done
echo "== $(( $(date +%s) - S )) s: done"
