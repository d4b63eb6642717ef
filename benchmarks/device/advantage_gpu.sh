#!/usr/bin/env bash
# experiments/value_function's closed-loop RECAP comparison on one GPU (device tool): record
# advantage_tabletop's demos, train the value function on them and label advantages
# (+experiment=advantage_tabletop_value, /tmp/runs/value), and train + evaluate Pi0.5 on the
# same frames unfiltered (jobs pi05_small, pi05_small-s1: seeds 0 and 1) and
# advantage-conditioned on the value run's advantage_dataset (pi05_small-adv, pi05_small-adv1),
# all side by side through tabletop_spatial_gpu.sh with DETACH=1: the conditioned jobs start when
# the advantage dataset appears. Carry [".whl/dist", ".gl"]. Issue the same command call after
# call, each at once (an idle machine is handed back after 30 s, the runs with it):
#   MAX_STEPS_pi05_small=6000 bash benchmarks/device/advantage_gpu.sh
# One seed per arm (a session's 30 device minutes hold about that; the recording is seeded, the
# same every session): POLICIES="pi05_small pi05_small-adv". Measured (H100, 2026-11-27): the
# recording ~6-7 min of the first call (inferred: that call's output was lost); the value
# run's 2,400 steps 4.6 min beside two Pi0.5 jobs, those at ~11 steps/s each.
# Keep each call's own output in a file: a call the device tool stops at its limit returns
# nothing of a pipe.
set -u -o pipefail
S=$(date +%s)
source benchmarks/device/env.sh || exit 1
R=/tmp/runs; SRC=/tmp/src; mkdir -p $R
test -d $SRC || cp -r "$PWD" $SRC
export EXPERIMENT=advantage_tabletop EPISODES=${EPISODES:-200} EVAL_EPISODES=${EVAL_EPISODES:-50}
export POLICIES=${POLICIES:-"pi05_small pi05_small-s1 pi05_small-adv pi05_small-adv1"}
export EXTRA="policy.compile=true callbacks.step_checkpoint.save_freq=500 ${EXTRA:-}"
export EXTRA_s1="seed=1" EXTRA_adv="policy.advantage.enabled=true data.source=lerobot data.root=$R/value/advantage_dataset"
export EXTRA_adv1="$EXTRA_adv seed=1" WAIT_adv=$R/value/advantage_dataset WAIT_adv1=$R/value/advantage_dataset
export DETACH=1 COLLECT_S=${COLLECT_S:-420} CALL_S=${CALL_S:-565}
if ! test -e $R/value.launched; then
  # the recording, once, with every core (the training jobs and the value run find it cached)
  OMP_NUM_THREADS=1 timeout $COLLECT_S python3 -m vlaexp +experiment=advantage_tabletop paths.root_dir=$R \
    print_config=false "stages=[collect]" data.collect.n_workers=12 hydra.run.dir=$R/collect_adv 2>&1 \
    | grep -aE "expert successes|rror" | cut -c1-300
  echo "collect done after $(( $(date +%s) - S )) s"
  # the value function and its advantages, in its own session (outlives this call)
  (cd $SRC && PYTHONPATH=/tmp/site:$SRC setsid nohup bash -c 'python3 -m vlaexp "$@"; echo $? > '$R'/value.rc' _ \
    +experiment=advantage_tabletop_value paths.root_dir=$R hydra.run.dir=$R/value print_config=false \
    trainer.max_time=00:01:00:00 ${EXTRA_value:-} >> $R/value.log 2>&1 < /dev/null &)
  touch $R/value.launched
fi
echo "value run: $(grep -aE "value_align:|Value function on|Advantages of" $R/value.log | cut -c1-400) rc=$(cat $R/value.rc 2>/dev/null)"
# its CALL_S counts from its own start: what is left of this call's
CALL_S=$(( CALL_S - ($(date +%s) - S) )) bash benchmarks/device/tabletop_spatial_gpu.sh "[0,1]" 00:02:00:00 99999
# the value run's files come back beside the jobs' (value.tar.gz)
B=/tmp/back/value; rm -rf $B; mkdir -p $B
cp $R/value.log $B/ 2>/dev/null
(cd $R/value 2>/dev/null && cp -r value_eval.json advantage.json csv/metrics.csv value_predictions.csv value_plots $B/ 2>/dev/null)
cp $(ls -td $R/outputs/cache/datasets/*/meta/vlaexp_episodes.jsonl 2>/dev/null | head -1) $B/ 2>/dev/null
tar -czf ${OUT:-/tmp/out}/value.tar.gz -C /tmp/back value
echo "call done after $(( $(date +%s) - S )) s"
