#!/usr/bin/env bash
# Ours and the peer (LeRobot 0.4.4's own Pi0, ../shared/peer) side by side on one H200, as run H
# of experiments/pi0_speed measured them: our compiled training modes first (the device script
# pi0_mfu_gpu.sh), then the peer, then the GPU tests. The peer needs ~114 GB: run it on an
# H200 (device tool: needs_h200=true). Carry [".whl/peer"], made here once:
#   mkdir -p .whl/peer && pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl/peer transformers==4.57.6 tokenizers==0.22.1 \
#     huggingface-hub==0.35.3 draccus==0.10.0 deepdiff==8.6.2 orderly-set==5.5.0 mergedeep==1.3.4 \
#     pyserial==3.5 diffusers==0.35.2 pydantic==2.14.4 pydantic-core==2.50.5 \
#     typing-inspection==0.4.5 annotated-types
#   cp .whl/dist/{lerobot,datasets,dill,multiprocess,typing_extensions,omegaconf,antlr4,hydra_core}*.whl .whl/peer/
#   cp ../shared/peer/lerobot_pi0_bench.py ../shared/peer/lerobot_pi0_shims.py .whl/peer/
# (25 MB in all: PyAV's 40 MB wheel stays behind, env.sh's stand-in takes its place)
#   MODES="compiled compiled_dense_mask" bash benchmarks/device/pi0_vs_peer_gpu.sh
set -u -o pipefail
S=$(date +%s) OUT=${OUT:-/tmp/out} PEER=${PEER:-.whl/peer}
mkdir -p $OUT /tmp/peer/av
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/peer $PEER/*.whl || exit 1
# env.sh's PyAV stand-in (LeRobot imports av when it loads; nothing here decodes video)
sed -n "/^  mkdir -p \/tmp\/site\/av/,/^PY$/p" benchmarks/device/env.sh | sed '1d;$d' > /tmp/peer/av/__init__.py
WHEELS=$PEER MODES=${MODES:-compiled compiled_dense_mask} STEPS=${STEPS:-10} COUNT_BATCH=${COUNT_BATCH:-8} \
  CALL_S=${OURS_S:-370} NAME=${NAME:-h_pi0_train_h200} bash benchmarks/device/pi0_mfu_gpu.sh
cp benchmarks/results/${NAME:-h_pi0_train_h200}.* $OUT/ 2>/dev/null
echo "== $(( $(date +%s) - S )) s before the peer"
# the peer on transformers 4.57 (its own --target); ours runs on the image's transformers 5
(cd $PEER && PYTHONPATH=/tmp/peer B=32 STEPS=5 NLAT=${NLAT:-5} timeout ${PEER_S:-120} \
  python3 lerobot_pi0_bench.py > $OUT/peer_lerobot_pi0_b32.json 2> $OUT/peer.err)
grep -E "train_step_s_median|peak|mfu|chunk_ms" $OUT/peer_lerobot_pi0_b32.json
echo "== $(( $(date +%s) - S )) s before the GPU tests"
PYTHONPATH=$PWD:/tmp/oc timeout $(( ${CALL_S:-590} - ($(date +%s) - S) )) \
  python3 -m pytest -q -p no:cacheprovider tests/test_pi0_gpu.py 2>&1 | tail -4
