#!/usr/bin/env bash
# Training MFU of full-size Pi0 / Pi0.5 on the GPU machine (device tool), with and without
# SigLIP's MLP width padded (4304 -> 4352, zero weights), side by side in one call
# (experiments/pi0_speed, run F); first, RND scoring of one step (issue 6's <= 2 ms), fp32 and
# bf16. Carry .whl/gpu: omegaconf, antlr4 and hydra-core come from it.
#   RUNS="pi0:0 pi0:128 pi05:128" bash benchmarks/device/pi0_mfu_gpu.sh     (variant:pad multiple)
set -u -o pipefail
export PYTHONUNBUFFERED=1
S=$(date +%s) OUT=${OUT:-/tmp/out}
mkdir -p $OUT /tmp/oc
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/oc \
  .whl/gpu/omegaconf-*.whl .whl/gpu/antlr4*.whl .whl/gpu/hydra_core-*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/oc
nvidia-smi -L
for dt in float32 bfloat16; do
  timeout 120 python3 benchmarks/bench_rnd.py --dtype $dt 2>&1 | grep -v Warning | tail -3
done
cp benchmarks/results/rnd_score_* $OUT/ 2>/dev/null
for run in ${RUNS:-pi0:0 pi0:128}; do
  v=${run%%:*} pad=${run##*:}
  echo "== $(( $(date +%s) - S )) s: $v, MLP pad multiple $pad"
  timeout $(( ${CALL_S:-580} - ($(date +%s) - S) )) python3 benchmarks/bench_pi0.py --variant $v \
    --infer-modes --train-modes compiled --pad-vision-mlp $pad --name f_${v}_train_pad$pad 2>&1 \
    | grep -v Warning | tail -4
  cp benchmarks/results/f_* $OUT/ 2>/dev/null
done
echo "== $(( $(date +%s) - S )) s: done"
