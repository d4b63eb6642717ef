#!/usr/bin/env bash
# experiments/value_function's closed-loop RECAP comparison on the GPU machine (device tool):
# record advantage_tabletop's demos, train the value function on them and label advantages
# (+experiment=advantage_tabletop_value, /tmp/runs/value), and train + evaluate Pi0.5 on the
# same frames unfiltered (jobs pi05_small, pi05_small-s1: seeds 0 and 1) and
# advantage-conditioned on the value run's advantage_dataset (pi05_small-adv, pi05_small-adv1),
# all side by side through tabletop_spatial_gpu.sh with DETACH=1: the conditioned jobs start when
# the advantage dataset appears. Carry [".whl/dist", ".gl"]. Issue the same command call after
# call, each at once (an idle machine is handed back after 30 s, the runs with it):
#   MAX_STEPS_pi05_small=6000 bash benchmarks/device/advantage_gpu.sh
# One seed per arm (a session's 30 device minutes hold about that on one GPU; the recording is
# seeded, the same every session): POLICIES="pi05_small pi05_small-adv". Device time is the
# time a machine is held, whatever its GPUs: on nvidia-h100-x4 the jobs go round robin over
# the cards (POLICIES' order), the value run on the last one, the recording on 60 cores.
# WITH_RVQ=1 adds experiments/rvq_adaptive's comparison to the same machine: the RVQ policy
# (rvq_policy_small-rvq: tokenizer fit, then training; +experiment=rvq_policy_tabletop_spatial)
# and the flow Pi0.5 (pi05_small-flow; +experiment=tabletop_spatial) on tabletop_spatial's own
# demos, recorded beside the mix, then rvq_compare (rvq_policy_small-cmp) once both ended:
#   WITH_RVQ=1 MAX_STEPS_pi05_small=5000 MAX_STEPS_rvq_policy_small=5000 bash benchmarks/device/advantage_gpu.sh
# Measured (H100, 2026-11-27): the recording ~6-7 min of the first call with 12 workers
# (inferred: that call's output was lost); the value run's 2,400 steps 4.6 min beside two
# Pi0.5 jobs, those at ~11 steps/s each. On nvidia-h100-x4 (WITH_RVQ=1, both arms' two seeds,
# 5,000 steps): both recordings side by side 416 s; the value run 8.6 min (2 of them waiting
# for its preload workers to spawn beside four starting jobs); unfiltered Pi0.5 done and
# evaluated ~13.5 min after launch; the conditioned ones ~12 min of training after the
# advantage dataset appeared (~9 steps/s). All of it did not fit one session's 30 minutes:
# the conditioned seed 0's evaluation and the RVQ comparison were left (experiments/value_function).
# Second session (nvidia-h100-x4, POLICIES="pi05_small-adv pi05_small-adv1 pi05_small-s2
# pi05_small-adv2", 5,000 steps): the recording alone 308 s, the value run 5.0 min, each
# conditioned job 9.2 min of training + 68 s of evaluation, all done in three calls (1,303 s held).
# Third session (nvidia-h100-x4, WITH_RVQ=1, POLICIES="pi05_small-flow rvq_policy_small-rvq
# pi05_small-adv pi05_small-adv1 rvq_policy_small-cmp pi05_small-adv2": the RVQ jobs on the first
# cards from the start, the conditioned ones after the value run): everything in three calls,
# 1,732 s held, the comparison cut to CMP_EPISODES=5 to fit.
# The jittery mix, both arms, two seeds each (one session on nvidia-h100-x4 by the timings above;
# positive_by_action_noise, printed once the value run ends, says whether the jittery demos'
# frames are the negative ones):
#   ADV_EXP=advantage_tabletop_jitter POLICIES="pi05_small pi05_small-s1 pi05_small-adv pi05_small-adv1" \
#     MAX_STEPS_pi05_small=5000 bash benchmarks/device/advantage_gpu.sh
# Keep each call's own output in a file: a call the device tool stops at its limit returns
# nothing of a pipe.
set -u -o pipefail
S=$(date +%s)
source benchmarks/device/env.sh || exit 1
R=/tmp/runs; SRC=/tmp/src; mkdir -p $R
test -d $SRC || cp -r "$PWD" $SRC
# ADV_EXP: the mix (advantage_tabletop: expert faults; advantage_tabletop_jitter: clean and
# jittery demos), its value run ${ADV_EXP}_value
export EXPERIMENT=${ADV_EXP:-advantage_tabletop} EPISODES=${EPISODES:-200} EVAL_EPISODES=${EVAL_EPISODES:-50}
export POLICIES=${POLICIES:-"pi05_small pi05_small-s1 pi05_small-adv pi05_small-adv1"}
export EXTRA="callbacks.step_checkpoint.save_freq=500 ${EXTRA:-}" EXTRA_pi05_small="policy.compile=true ${EXTRA_pi05_small:-}"
export EXTRA_s1="seed=1" EXTRA_adv="policy.advantage.enabled=true data.source=lerobot data.root=$R/value/advantage_dataset"
export EXTRA_adv1="$EXTRA_adv seed=1" WAIT_adv=$R/value/advantage_dataset WAIT_adv1=$R/value/advantage_dataset
# third seeds for cards the jobs above leave idle: pi05_small-s2 (unfiltered) and pi05_small-adv2
export EXTRA_s2="seed=2" EXTRA_adv2="$EXTRA_adv seed=2" WAIT_adv2=$R/value/advantage_dataset
# COLLECT_TAGS " ": tabletop_spatial_gpu.sh records nothing itself (done above)
export DETACH=1 COLLECT_S=${COLLECT_S:-420} CALL_S=${CALL_S:-565} COLLECT_TAGS=${COLLECT_TAGS:-" "}
NGPU=$(nvidia-smi -L | wc -l) WORKERS=$(( $(nproc) > 16 ? $(nproc) - 4 : 12 ))
if test "${WITH_RVQ:-0}" = 1; then
  # tabletop_spatial's recipe (150 demos a task, no faults, successes only); the comparison
  # evaluates CMP_EPISODES (20) seeds a task at batch 1 (rvq_compare's latencies are one robot's)
  # appended unless POLICIES names them already (its order places the jobs on the cards)
  case " $POLICIES " in *" rvq_policy_small-cmp "*) ;;
    *) export POLICIES="$POLICIES pi05_small-flow rvq_policy_small-rvq rvq_policy_small-cmp";; esac
  export EXP_flow=tabletop_spatial EXP_rvq=rvq_policy_tabletop_spatial EXP_cmp=rvq_policy_tabletop_spatial
  export EXTRA_flow="data.collect.episodes_per_task=150 stages=[collect,train]"
  export EXTRA_rvq="data.collect.episodes_per_task=150 stages=[collect,tokenizer_fit,train]"
  export EXTRA_cmp="data.collect.episodes_per_task=150 stages=[rvq_compare] eval.n_episodes=${CMP_EPISODES:-20} \
policy.path=$R/rvq_policy_small-rvq rvq_compare.flow_policy=$R/pi05_small-flow"
  export WAIT_cmp="$R/rvq_policy_small-rvq.rc $R/pi05_small-flow.rc"
fi
if ! test -e $R/value.launched; then
  # the recordings, once, with every core (the training jobs and the value run find them cached)
  NR=1; test "${WITH_RVQ:-0}" = 1 && NR=2
  OMP_NUM_THREADS=1 timeout $COLLECT_S python3 -m vlaexp +experiment=$EXPERIMENT paths.root_dir=$R \
    print_config=false "stages=[collect]" data.collect.n_workers=$(( WORKERS / NR )) hydra.run.dir=$R/collect_adv 2>&1 \
    | grep -aE "expert successes|rror" | cut -c1-300 &
  test $NR = 2 && OMP_NUM_THREADS=1 timeout $COLLECT_S python3 -m vlaexp +experiment=tabletop_spatial paths.root_dir=$R \
    print_config=false "stages=[collect]" data.collect.n_workers=$(( WORKERS / NR )) data.collect.use_videos=false \
    data.collect.task_ids=[0,1] data.collect.episodes_per_task=150 hydra.run.dir=$R/collect_flow 2>&1 \
    | grep -aE "expert successes|rror" | cut -c1-300 &
  wait
  echo "collect done after $(( $(date +%s) - S )) s"
  # the value function and its advantages, in its own session (outlives this call), on the
  # last GPU (the jobs' round robin starts at the first)
  (cd $SRC && CUDA_VISIBLE_DEVICES=$(( NGPU - 1 )) PYTHONPATH=/tmp/site:$SRC setsid nohup bash -c 'python3 -m vlaexp "$@"; echo $? > '$R'/value.rc' _ \
    +experiment=${EXPERIMENT}_value paths.root_dir=$R hydra.run.dir=$R/value print_config=false \
    trainer.max_time=00:01:00:00 ${EXTRA_value:-} >> $R/value.log 2>&1 < /dev/null &)
  touch $R/value.launched
fi
echo "value run: $(grep -aE "value_align:|Value function on|Advantages of" $R/value.log | cut -c1-400) rc=$(cat $R/value.rc 2>/dev/null)"
# the share of frames the labels call positive, by outcome (successes, failures before / after
# their fault): check it before trusting the conditioned jobs that train on them
# and among successes' frames by tenth of the episode (a rising profile makes "positive" a phase cue)
test -e $R/value/advantage.json && python3 -c "import json, sys; d = json.load(open(sys.argv[1]))
print('positive_by_outcome', d.get('positive_by_outcome'), 'success_positive_by_tenth', d.get('success_positive_by_tenth'),
      'positive_by_action_noise', d.get('positive_by_action_noise'))" $R/value/advantage.json
# its CALL_S counts from its own start: what is left of this call's
CALL_S=$(( CALL_S - ($(date +%s) - S) )) bash benchmarks/device/tabletop_spatial_gpu.sh "[0,1]" 00:02:00:00 99999
# the value run's files come back beside the jobs' (value.tar.gz)
B=/tmp/back/value; rm -rf $B; mkdir -p $B
cp $R/value.log $B/ 2>/dev/null
(cd $R/value 2>/dev/null && cp -r value_eval.json advantage.json csv/metrics.csv value_predictions.csv value_predictions_val.csv value_plots $B/ 2>/dev/null)
# the records of the dataset the value run read (its log names it; not the newest recording:
# the sixth session's value jobs beside it recorded another mix later, whose records came back)
cp "$(log_dataset $R/value.log)/meta/vlaexp_episodes.jsonl" $B/ 2>/dev/null
tar -czf ${OUT:-/tmp/out}/value.tar.gz -C /tmp/back value
echo "call done after $(( $(date +%s) - S )) s"
