#!/usr/bin/env bash
# experiments/rvq_adaptive on the GPU machine (device tool): the RVQ policy against the
# flow-matching Pi0.5 at the same small widths on tabletop_spatial, and the prefill /
# per-layer timings. Carry .whl/dist (benchmarks/device/env.sh's wheels plus
# vector-quantize-pytorch 1.32.0, einops, einx, loguru, frozendict, torch-einops-utils) and .gl.
#   PHASE=bench   bash benchmarks/device/rvq_gpu.sh      # bench_rvq_decoding, full and small
#   PHASE=train   bash benchmarks/device/rvq_gpu.sh      # collect, then both policies train
#                                                        # side by side (a later call resumes)
#   PHASE=compare bash benchmarks/device/rvq_gpu.sh      # rvq_compare: dense / coarse /
#                                                        # adaptive and the flow Pi0.5
# Runs live in /tmp/runs/<policy> on the warm machine; MAX_TIME is Lightning's budget counted
# over all calls (it resumes), KILL_S caps this call's training; JOBS picks the jobs.
set -u -o pipefail
S=$(date +%s)
WHEELS=${WHEELS:-.whl/dist} source benchmarks/device/env.sh || exit 1
OUT=${OUT:-/tmp/out}; R=/tmp/runs; mkdir -p $R $OUT
PHASE=${PHASE:-train} MAX_TIME=${MAX_TIME:-00:00:08:00} MAX_STEPS=${MAX_STEPS:-12000}
KILL_S=${KILL_S:-540} EPISODES=${EPISODES:-150} EVAL_EPISODES=${EVAL_EPISODES:-20}
COMMON="paths.root_dir=$R print_config=false data.collect.use_videos=false trainer.log_every_n_steps=50
 eval.n_videos=0 data.collect.task_ids=[0,1] eval.task_ids=[0,1] eval.n_episodes=$EVAL_EPISODES
 data.collect.episodes_per_task=$EPISODES"
RVQ="+experiment=rvq_policy_tabletop_spatial $COMMON hydra.run.dir=$R/rvq_policy_small"
FLOW="+experiment=tabletop_spatial $COMMON hydra.run.dir=$R/pi05_small"
case $PHASE in
bench)
  for size in full small; do python3 benchmarks/bench_rvq_decoding.py --size $size --repeats 50 2>&1 | grep -v Warning | tail -25; done
  cp benchmarks/results/rvq_decoding_* $OUT/ ;;
train)
  # recorded once, in a run dir of its own; both jobs then find it in the cache
  test -e $R/collect/run.json || timeout 300 python3 -m vlaexp $RVQ hydra.run.dir=$R/collect \
    "stages=[collect]" 2>&1 | grep -E "expert successes|Built|rror"
  echo "collect done after $(( $(date +%s) - S )) s"
  LEFT=$(( ${CALL_S:-590} - ($(date +%s) - S) )); test $KILL_S -gt $LEFT && KILL_S=$LEFT
  for job in ${JOBS:-rvq_policy_small pi05_small}; do
    RESUME=false; test -e $R/$job/checkpoints/last && RESUME=true
    if test $job = pi05_small; then ARGS="$FLOW stages=[collect,train]"; else ARGS="$RVQ stages=[collect,tokenizer_fit,train]"; fi
    timeout -s KILL $KILL_S python3 -m vlaexp $ARGS resume=$RESUME trainer.max_time=$MAX_TIME \
      trainer.max_steps=$MAX_STEPS >> $R/$job.log 2>&1 &
  done; wait
  echo "training done after $(( $(date +%s) - S )) s"
  for job in rvq_policy_small pi05_small; do
    echo "== $job"; grep -aoE "(val/loss|val/code_acc_l[12]|step)[=:] ?[0-9.]+" $R/$job.log | tail -4
    tail -c 800 $R/$job.log | grep -av Warning
    cp $R/$job/csv/metrics.csv $OUT/${job}_metrics.csv 2>/dev/null
  done
  cp $R/rvq_policy_small/tokenizer/analysis.md $OUT/rvq_tokenizer_analysis.md 2>/dev/null ;;
compare)
  timeout -s KILL ${CALL_S:-580} python3 -m vlaexp $RVQ resume=true "stages=[rvq_compare]" \
    policy.path=$R/rvq_policy_small rvq_compare.flow_policy=$R/pi05_small > $R/compare.log 2>&1
  tail -c 1500 $R/compare.log | grep -av Warning
  cat $R/rvq_policy_small/rvq_compare/comparison.md
  cp $R/rvq_policy_small/rvq_compare/comparison.* $R/compare.log $OUT/ ;;
esac
echo "phase $PHASE done after $(( $(date +%s) - S )) s"
