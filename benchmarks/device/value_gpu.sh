#!/usr/bin/env bash
# experiments/value_function on the GPU machine (device tool): +experiment=value_tabletop with
# the small value function on both cameras at 128 px. Carry .whl/dist and .gl (rvq_gpu.sh).
#   TRAIN_TIME=00:00:01:30 bash benchmarks/device/value_gpu.sh   (RUN names the run dir; KILL_S caps each run)
#   EXTRA="policy.augment.enabled=true policy.loss=hl_gauss" BATCH=128 ...   (more overrides)
#   RUNS="a:policy.c_fail=10 b:policy.c_fail=20" ...   (runs side by side, each with its overrides)
# On a fresh machine the stages before training take ~2.5 min (collect, stage 1) and value_eval
# ~1.5 min after it: with KILL_S=540, TRAIN_TIME 00:00:06:00 left value_eval killed once
# (experiments/value_function, value4); keep TRAIN_TIME <= KILL_S - 4.5 min. Recording 240
# episodes (data.collect.episodes_per_task=60) takes 3.5-4.5 min of a call: a run cut by the
# call's limit goes on in the next call only on the same machine (make it at once: an idle one
# is handed back after 30 s) with EXTRA+=" resume=true" and the stages still to run.
set -u -o pipefail
S=$(date +%s)
WHEELS=${WHEELS:-.whl/dist} source benchmarks/device/env.sh || exit 1
OUT=${OUT:-/tmp/out}; R=/tmp/runs; mkdir -p $R $OUT
# RUNS="name:override,override name2:override ..." trains several runs side by side on the one
# GPU (the first to reach the collect stage records the dataset, the others wait on its lock);
# each run's files come back as $OUT/<name>.tar (few files come back from the device).
RUNS=${RUNS:-${RUN:-value}:}
run() {  # $1 run name, $2 its own overrides (comma-separated)
  timeout -s KILL ${KILL_S:-240} python3 -m vlaexp +experiment=value_tabletop policy=value_fn_small camera=both \
    trainer=gpu task_suite.resolution=128 policy.image_size=128 data.collect.n_workers=12 data.num_workers=${WORKERS:-8} \
    data.batch_size=${BATCH:-64} trainer.max_steps=${MAX_STEPS:-4000} trainer.max_time=${TRAIN_TIME:-00:00:01:30} \
    trainer.val_check_interval=500 print_config=false paths.root_dir=$R hydra.run.dir=$R/$1 ${EXTRA:-} ${2//,/ } > $R/$1.log 2>&1
  echo "$1: rc=$? after $(( $(date +%s) - S )) s"
}
for spec in $RUNS; do run ${spec%%:*} "${spec#*:}" & sleep 5; done; wait
for spec in $RUNS; do
  N=${spec%%:*}; D=$R/$N; echo "== $N (${spec#*:})"
  grep -aE "expert successes|value_align:|Value function on|max_steps|Time limit" $R/$N.log | cut -c1-300
  tail -c 1200 $R/$N.log | grep -av Warning
  # the episodes' records (lengths, faults) of the dataset the run used, beside its results
  cp $(ls -td $R/outputs/cache/datasets/*/meta/vlaexp_episodes.jsonl 2>/dev/null | head -1) $D/ 2>/dev/null
  (cd $D && tar cf $OUT/$N.tar $(ls -d value_eval.json value_align/align.json csv/metrics.csv advantage.json \
    value_predictions.csv value_predictions_val.csv vlaexp_episodes.jsonl value_plots 2>/dev/null) ../$N.log)
done
ls $OUT
