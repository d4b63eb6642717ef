#!/usr/bin/env bash
# experiments/value_function on the GPU machine (device tool): +experiment=value_tabletop with
# the small value function on both cameras at 128 px. Carry .whl/dist and .gl (rvq_gpu.sh).
#   TRAIN_TIME=00:00:01:30 bash benchmarks/device/value_gpu.sh   (RUN names the run dir; KILL_S caps the call)
#   EXTRA="policy.augment.enabled=true policy.loss=hl_gauss" BATCH=128 ...   (more overrides)
# On a fresh machine the stages before training take ~2.5 min (collect, stage 1) and value_eval
# ~1.5 min after it: with KILL_S=540, TRAIN_TIME 00:00:06:00 left value_eval killed once
# (experiments/value_function, value4); keep TRAIN_TIME <= KILL_S - 4.5 min.
set -u -o pipefail
S=$(date +%s)
WHEELS=${WHEELS:-.whl/dist} source benchmarks/device/env.sh || exit 1
OUT=${OUT:-/tmp/out}; R=/tmp/runs; RUN=${RUN:-value}; mkdir -p $R $OUT
timeout -s KILL ${KILL_S:-240} python3 -m vlaexp +experiment=value_tabletop policy=value_fn_small camera=both \
  trainer=gpu task_suite.resolution=128 policy.image_size=128 data.collect.n_workers=12 data.num_workers=8 data.batch_size=${BATCH:-64} \
  trainer.max_steps=${MAX_STEPS:-4000} trainer.max_time=${TRAIN_TIME:-00:00:01:30} trainer.val_check_interval=500 \
  print_config=false paths.root_dir=$R hydra.run.dir=$R/$RUN ${EXTRA:-} > $R/$RUN.log 2>&1
echo "rc=$? after $(( $(date +%s) - S )) s"
grep -aE "expert successes|value_align:|Value function on|max_steps|Time limit" $R/$RUN.log | cut -c1-300
tail -c 1200 $R/$RUN.log | grep -av Warning
cp $R/$RUN/value_eval.json $R/$RUN/value_align/align.json $R/$RUN/csv/metrics.csv $OUT/ 2>/dev/null
cp $R/$RUN/advantage.json $R/$RUN/value_predictions.csv $OUT/ 2>/dev/null
# the episodes' records (lengths, faults) of the dataset the run used, and the plots in one tar
# (few files come back from the device)
cp $(ls -td $R/outputs/cache/datasets/*/vlaexp_episodes.jsonl 2>/dev/null | head -1) $OUT/ 2>/dev/null
(cd $R/$RUN && tar cf $OUT/value_plots.tar value_plots) 2>/dev/null
ls $OUT
