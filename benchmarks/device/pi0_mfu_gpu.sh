#!/usr/bin/env bash
# Training MFU of full-size Pi0 / Pi0.5 on the GPU machine (device tool): the training modes of
# benchmarks/bench_pi0.py side by side in one process (one model, one FLOP count), with a kernel
# profile of each compiled step (experiments/pi0_speed). Carry the wheels (WHEELS, default
# .whl/dist): omegaconf, antlr4 and hydra-core come from there.
#   MODES="compiled compiled_nocudnn autotuned" bash benchmarks/device/pi0_mfu_gpu.sh
#   COUNT_BATCH=8 on an 80 GB card (the eager counted step needs ~101 GB at batch 32)
#   VARIANT=pi05 PAD=128 NAME=g_pi05_train bash benchmarks/device/pi0_mfu_gpu.sh
# (run F used --pad-vision-mlp 0 and 128 in two processes: PAD=0 / PAD=128)
set -u -o pipefail
export PYTHONUNBUFFERED=1
# a second training mode in the same process otherwise runs out of memory on an 80 GB card
# (fragmentation: 5.5 GiB reserved but unallocated)
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
S=$(date +%s) OUT=${OUT:-/tmp/out}
mkdir -p $OUT /tmp/oc
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/oc \
  ${WHEELS:-.whl/dist}/omegaconf-*.whl ${WHEELS:-.whl/dist}/antlr4*.whl \
  ${WHEELS:-.whl/dist}/hydra_core-*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/oc
nvidia-smi -L
V=${VARIANT:-pi0} NAME=${NAME:-g_${VARIANT:-pi0}_train}
# the results file is rewritten after each mode: what finished comes back if time runs out
timeout $(( ${CALL_S:-580} - ($(date +%s) - S) )) python3 benchmarks/bench_pi0.py --variant $V \
  --infer-modes --train-modes ${MODES:-compiled compiled_nocudnn autotuned} --steps ${STEPS:-10} \
  --profile --pad-vision-mlp ${PAD:-0} --count-batch ${COUNT_BATCH:-32} --name $NAME 2>&1 | grep -v Warning | tail -20
cp benchmarks/results/${NAME}.* $OUT/ 2>/dev/null
echo "== $(( $(date +%s) - S )) s: done"
