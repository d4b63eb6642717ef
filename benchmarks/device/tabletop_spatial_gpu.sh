#!/usr/bin/env bash
# experiments/tabletop_spatial on the GPU machine (device tool): collect, then train Pi0.5 and
# Pi0 (small widths) side by side on the one GPU, evaluate each in closed loop. Prepare here:
#   .whl/dist: the wheels benchmarks/device/env.sh lists and says how to download (numpy
#             2.2.6 among them: datasets cannot write LeRobot's shape-(1,) features under the
#             image's numpy 2.5); 30 MB, so one call carries them (carry: .whl/dist, .gl)
#   .gl:      the glvnd loader debs (benchmarks/device/tabletop_gpu.sh)
# (benchmarks/device/env.sh installs them, with a stand-in for PyAV.)
# Run nothing of git in the machine's copy: its .git can be older than the work tree it came with
# (attempt 12 lost a job to a `git checkout` there, which restored an older commit's files).
#   bash benchmarks/device/tabletop_spatial_gpu.sh "[0,1]" 00:00:07:00 16000
# Each policy trains in a fixed run dir (/tmp/runs/<policy>): a later call on the same warm
# machine (issue it at once: an idle machine is handed back after 30 s, and the run with it) resumes it from its last checkpoint (resume=true) with a larger MAX_TIME (Lightning's
# timer counts the time of earlier calls too), then evaluates again.
#   POLICIES="pi05_small" KILL_S=560 bash benchmarks/device/tabletop_spatial_gpu.sh ...
# EXTRA adds overrides to every training job, EXTRA_<policy> to that policy's alone, e.g. the
# RND stages after evaluation. MAX_STEPS_<policy> is where this call stops that policy and
# DECAY_<policy> the length of its cosine schedule over all calls (default: the max steps), so
# that a run spread over calls stops each call at a checkpoint and ends its schedule in the last:
#   MAX_STEPS_pi05_small=3000 DECAY_pi05_small=11000 ...   (then 8500, then 11000)
# DETACH=1 runs the jobs across calls (see launch() below): three calls of one machine, issued
# back to back with the same arguments, trained both policies to 8,000 steps, evaluated them
# and ran the RND stages (attempt 10):
#   DETACH=1 MAX_STEPS_pi05_small=8000 MAX_STEPS_pi0_small=8000 CALL_S=588 EXTRA="..." \
#     bash benchmarks/device/tabletop_spatial_gpu.sh "[0,1]" 00:02:00:00 99999
# The RND stages after evaluation:
#   EXTRA_pi0_small="stages=[collect,train,eval,rnd_collect,rnd_train,rnd_score,rnd_detect,rnd_visualize,report]"
# (rnd_detect before rnd_visualize: without PyAV here the overlay mp4 is off, rnd.visualize.video=false)
# Variants: a job named <policy>-<tag> (e.g. POLICIES="pi0_small pi0_small-d400") trains
# <policy> in /tmp/runs/<policy>-<tag> with EXTRA, EXTRA_<policy>, EXTRA_<tag> and
# EXTRA_<policy>_<tag> after one another (the last of a repeated override wins); jobs go round
# robin over the GPUs (8 jobs on nvidia-h100-x4: two a card). The demos a tag's overrides ask
# for are recorded first when the tag is in COLLECT_TAGS ("-" = EXTRA alone; the tags record
# side by side, the cores shared), so that no training job records them itself:
#   COLLECT_TAGS="- d400" EXTRA_d400="data.collect.episodes_per_task=400" \
#     POLICIES="pi0_small pi05_small pi0_small-d400 pi05_small-d400" ...
set -u -o pipefail
TASKS=${1:-"[0,1]"} MAX_TIME=${2:-00:00:07:00} MAX_STEPS=${3:-16000}
POLICIES=${POLICIES:-"pi05_small pi0_small"} KILL_S=${KILL_S:-560} EVAL_EPISODES=${EVAL_EPISODES:-20}
EXTRA=${EXTRA:-} EPISODES=${EPISODES:-150} COLLECT_S=${COLLECT_S:-300}
S=$(date +%s)
source benchmarks/device/env.sh || exit 1
OUT=${OUT:-/tmp/out}; R=/tmp/runs; mkdir -p $R $OUT
COMMON="paths.root_dir=$R print_config=false data.collect.use_videos=false
 trainer.log_every_n_steps=50 eval.n_videos=0 data.collect.task_ids=$TASKS eval.task_ids=$TASKS
 eval.n_episodes=$EVAL_EPISODES data.collect.episodes_per_task=$EPISODES rnd.visualize.video=false"
# recording runs in env processes: as many as the machine's cores allow (the dataset is the same)
WORKERS=${WORKERS:-$(( $(nproc) > 16 ? $(nproc) - 4 : 12 ))}
# data.collect.writers: one process writes at most ~1.6 demos a second (LeRobot's save_episode
# holds the GIL), which bound every recording up to the eighth session whatever the worker
# count (0.74-0.76 s a demo with 12 or 28 workers); WRITERS processes each write a share.
# For the jobs that record their own datasets (COLLECT_TAGS=" "): JOB_WRITERS, default 4.
# Measured (4x H100, ninth session, 4 writers of 7 env workers, two recordings side by side):
# the collect stage took 140 s for 600 DART demos and 129 s for 400 value episodes, against
# 444 s and 408 s in one process the session before; the datasets were the same
COMMON="$COMMON data.collect.writers=${JOB_WRITERS:-4}"
# EXTRA goes in too (before stages=[collect], which wins): overrides of the data, e.g.
# data.collect.action_noise, change the dataset's cache key, and the training jobs must find
# the dataset recorded here instead of recording it again with fewer workers each
pol() { echo ${1%%-*}; }                                  # pi0_small-d400 -> pi0_small
tag() { case $1 in *-*) echo ${1#*-};; *) echo -;; esac; }  # pi0_small-d400 -> d400
# the experiment of a job or recording tag: EXP_<tag> where set (e.g. the RVQ policy's jobs
# beside the Pi0.5 ones, advantage_gpu.sh), else EXPERIMENT
exp() { local t=$(tag $1) E=EXPERIMENT; test $t = - || { E=EXP_$t; test -n "${!E:-}" || E=EXPERIMENT; }
  echo "+experiment=${!E:-tabletop_spatial}"; }
# the overrides of job $1 beyond COMMON, in order (EXTRA, then the policy's, the tag's, the job's)
overrides() {
  local p=$(pol $1) t=$(tag $1); local MINE=EXTRA_$p TAGV=EXTRA_$t JOBV=EXTRA_${p}_$t
  echo "$EXTRA ${!MINE:-}"; test $t = - || echo "${!TAGV:-} ${!JOBV:-}"
}
# DETACH=1: the jobs run in their own process session (setsid), which outlives the call on a
# warm machine (device README), so one run spans several calls without a restart's ~100 s of
# setup (model build, preload, compile) in each: the first call records and launches, a later
# call with the same arguments (issued at once) finds them and watches until they end or the
# call's time is up, relaunching (resume=true) any that died without finishing. They run from a
# copy of the tree (/tmp/src), untouched by the next call's copy. Then MAX_STEPS is the run's end.
launch() {  # job (<policy> or <policy>-<tag>), how: "timeout" (ends with the call) or "detach"
  local p=$1 RESUME=false STEPS=MAX_STEPS_$(pol $1) DECAY=DECAY_$(pol $1)
  test -e $R/$p/checkpoints/last && RESUME=true
  # a run killed before its first checkpoint has nothing to resume: start it again
  $RESUME || rm -rf $R/$p
  local CMD="python3 -m vlaexp $(exp $p) $COMMON policy=$(pol $p) hydra.run.dir=$R/$p resume=$RESUME trainer.max_time=$MAX_TIME
    trainer.max_steps=${!STEPS:-$MAX_STEPS} policy.scheduler.decay_steps=${!DECAY:-${!STEPS:-$MAX_STEPS}} $(overrides $p)"
  if test $2 = detach; then
    rm -f $R/$p.rc
    # the command goes in as arguments, split as in the timeout branch (never re-parsed by a
    # shell: the overrides hold braces and brackets); its exit status lands in <policy>.rc
    (cd $SRC && PYTHONPATH=/tmp/site:$SRC setsid nohup bash -c 'f=$1; shift; "$@"; echo $? > $f' _ \
      $R/$p.rc $CMD >> $R/$p.log 2>&1 < /dev/null &)
  else
    timeout -s KILL $KILL_S $CMD >> $R/$p.log 2>&1 &
  fi
}
running() { pgrep -f "hydra.run.dir=$R/$1 " > /dev/null; }
# WAIT_<tag>="<path> ...": the tag's jobs start once every one of those paths exists (e.g. a
# dataset another job writes, or other jobs' .rc files; advantage_gpu.sh), looked for every
# 10 s while the call watches (DETACH=1)
ready() {
  local t=$(tag $1) w; test $t = - && return 0
  local W=WAIT_$t; for w in ${!W:-}; do test -e $w || return 1; done
}
start_ready() {  # launch each job that has not ended, is not running and may start
  local i=0 p
  for p in $POLICIES; do
    export CUDA_VISIBLE_DEVICES=$(( i % NGPU )); i=$(( i + 1 ))
    test -e $R/$p.rc || running $p || ! ready $p || { echo "$(( $(date +%s) - S )) s: launching $p"; launch $p detach; }
  done
  unset CUDA_VISIBLE_DEVICES
}
# one GPU per job where the machine has as many (nvidia-h100-x2: Pi0.5 and Pi0 side by side,
# each alone on its card), else all on GPU 0
NGPU=$(nvidia-smi -L | wc -l)
if test "${DETACH:-0}" = 1 && test -e $R/launched; then
  echo "watching the jobs launched $(( S - $(stat -c %Y $R/launched) )) s ago"
else
  TAGS=${COLLECT_TAGS:--}; NT=$(echo $TAGS | wc -w)
  for t in $TAGS; do
    TAGV=EXTRA_$t; X=; test $t = - || X=${!TAGV:-}
    # one thread per env process: attempt 11's three recordings side by side (60 env processes
    # at OMP_NUM_THREADS=4 on 64 cores) made ~1.1 demos/s each (150 in 132 s), against
    # > 1.4/s from 12 on 16 cores in attempt 10 (300 in 212 s, install included); not measured since
    # a recording cut off by COLLECT_S is lost whole (the cache keeps finished datasets only), and
    # each training job then records it again with its own few workers: say so (the seventh
    # session's 4x H100 recorded 300 demos of task 0 in COLLECT_S=480, and its jobs re-recorded
    # both tasks, 8 min late). rc 124: timeout's exit status
    { OMP_NUM_THREADS=1 timeout $COLLECT_S python3 -m vlaexp $(exp x-$t) $COMMON $EXTRA $X "stages=[collect]" data.collect.n_workers=$(( WORKERS / NT )) \
      data.collect.writers=${WRITERS:-$(( WORKERS / NT / 4 > 1 ? WORKERS / NT / 4 : 1 ))} \
      hydra.run.dir=$R/collect_$t 2>&1; echo "[$t] recording exit status $?" > $R/collect_$t.rc; } | grep -E "expert successes|Built|rror" | sed "s/^/[$t] /" &
  done; wait
  for t in $TAGS; do
    grep -q " 124$" $R/collect_$t.rc && echo "[$t] RECORDING TIMED OUT after COLLECT_S=$COLLECT_S s: the jobs record it again themselves (raise COLLECT_S)"
    cat $R/collect_$t.rc
  done
  echo "install + collect done after $(( $(date +%s) - S )) s"
fi
# No periodic all-thread stack dumps (faulthandler.dump_traceback_later): in attempts 3 and 4
# both jobs segfaulted while a dump was being written, the last dump cut off mid-frame.
# the kill limit counts from here, but the call's 600 s count from its start: collect's time
# comes off it (CALL_S, default 590 s, is what the whole call may take)
LEFT=$(( ${CALL_S:-590} - ($(date +%s) - S) )); test $KILL_S -gt $LEFT && KILL_S=$LEFT
echo "training jobs get $KILL_S s"
# ALONE=1: a policy whose job has ended is evaluated again from its checkpoint in a fresh
# process, as saved and with compile and CUDA graphs off in a copy of its config.json
# (evaluation builds the policy from the checkpoint's config): does a checkpoint score the
# same in its training run and alone? (attempt 10's Pi0: task 1 43/50 in its run, 26/50
# alone on the H200, with unseeded sampling.) ALONE_VARIANTS (default "saved eager") may add
# nas<N>: the saved config with n_action_steps=N (re-plan every N steps; inference only).
# ALONE_JOBS (default: every job) limits which jobs. A job is evaluated as soon as it ends (the
# others still training), on its training GPU, its variants one after another, once per
# machine, as time allows.
alone() {  # job, GPU
  local p=$1 v RUN PM LEFT
  for v in ${ALONE_VARIANTS:-saved eager}; do
    RUN=$R/${p}_alone_$v; test -e $RUN/eval/eval_info.json && continue
    LEFT=$(( ${CALL_S:-590} - ($(date +%s) - S) - 20 )); test $LEFT -lt 60 && return
    PM=$R/$p/checkpoints/last/pretrained_model
    if test $v != saved; then
      rm -rf $R/${p}_pm_$v && cp -rL $PM $R/${p}_pm_$v && PM=$R/${p}_pm_$v
      python3 -c "import json, sys; f, v = sys.argv[1:]; c = json.load(open(f))
c.update(dict(compile=False, cuda_graphs=False) if v == 'eager' else dict(n_action_steps=int(v[3:])))
json.dump(c, open(f, 'w'))" $PM/config.json $v
    fi
    CUDA_VISIBLE_DEVICES=$2 timeout $LEFT python3 -m vlaexp $(exp $p) $COMMON policy=$(pol $p) "stages=[eval]" policy.path=$PM \
      hydra.run.dir=$RUN >> $R/${p}_alone.log 2>&1
    echo "$p alone ($v): $(python3 -c "import json; d = json.load(open('$RUN/eval/eval_info.json')); print(d['aggregated']['pc_success'], d['per_task'])" 2>&1 | tail -1)"
  done
}
start_alone() {  # alone() in the background for each ended job not yet started in this call
  test "${ALONE:-0}" = 1 || return 0
  local i=0 p
  for p in $POLICIES; do
    i=$(( i + 1 )); test -e $R/$p.rc && ! test -e $R/$p.alone_$S || continue
    case " ${ALONE_JOBS:-$POLICIES} " in *" $p "*) touch $R/$p.alone_$S; alone $p $(( (i - 1) % NGPU )) & ;; esac
  done
}
i=0
if test "${DETACH:-0}" = 1; then
  SRC=/tmp/src; test -d $SRC || cp -r "$PWD" $SRC
  start_ready; test -e $R/launched || touch $R/launched
  END=$(( $(date +%s) + KILL_S )); N=0
  while test $(date +%s) -lt $END; do
    DONE=1; for p in $POLICIES; do test -e $R/$p.rc || DONE=0; done; test $DONE = 1 && break
    sleep 10; N=$(( N + 1 )); start_alone; start_ready
    test $(( N % 6 )) = 0 && for p in $POLICIES; do  # every minute: where each job is
      echo "$(( $(date +%s) - S )) s $p: step $(awk -F, 'NR==1{for(i=1;i<=NF;i++) if($i=="step") c=i} END{print $c}' \
        $R/$p/csv/metrics.csv 2>/dev/null) rc=$(cat $R/$p.rc 2>/dev/null)"
    done
  done
else
  for p in $POLICIES; do
    export CUDA_VISIBLE_DEVICES=$(( i % NGPU )); i=$(( i + 1 ))
    launch $p timeout
  done; wait
fi
unset CUDA_VISIBLE_DEVICES
echo "train+eval done after $(( $(date +%s) - S )) s"
start_alone; wait  # the jobs that ended in this call's last seconds; then all of them
# what comes back: one tar.gz per job ($OUT returns at most 8 files): its log, metrics,
# eval_info.json and, when the RND stages ran, their scores summary, detection and plots
for p in $POLICIES; do
  B=/tmp/back/$p; rm -rf $B; mkdir -p $B
  cp $R/$p.log $B/; cp $R/$p/csv/metrics.csv $B/${p}_metrics.csv
  cp $R/$p/eval/eval_info.json $B/${p}_eval_info.json && python3 -c \
    "import json; d=json.load(open('$B/${p}_eval_info.json')); print('$p', d['aggregated'], d['per_task'], d['failure_modes'])"
  grep -aoE "val/loss: [0-9.]+" $R/$p.log | tail -1
  # an RVQ job's tokenizer analysis, a comparison job's table (rvq_compare), a value job's
  # evaluation and advantage summary
  cp -r $R/$p/tokenizer/analysis.* $R/$p/rvq_compare $R/$p/value_eval.json $R/$p/advantage.json \
    $R/$p/value_predictions.csv $R/$p/value_predictions_val.csv $B/ 2>/dev/null
  # and a value job's episode records (experiments/value_function/advantage_breakdown.py reads
  # them beside its predictions): those of the dataset its log says it built or reused; then
  # that script's relabelling of its test frames at the horizons GRID_HORIZONS, printed (the
  # shares by outcome, by tenth and, in a jittery mix, by action noise)
  # (a value job without value_advantage, e.g. value_fn_small-pert, returns the records alone)
  if test -e $R/$p/value_eval.json; then
    cp "$(log_dataset $R/$p.log)/meta/vlaexp_episodes.jsonl" $B/ 2>/dev/null
    test -e $B/advantage.json && test -e $B/vlaexp_episodes.jsonl && test -e $B/value_predictions.csv && PYTHONPATH=/tmp/site:$PWD python3 \
      experiments/value_function/advantage_breakdown.py $B/value_predictions.csv $B/advantage.json $B/vlaexp_episodes.jsonl \
      --out $B/label_grid --horizon ${GRID_HORIZONS:-5 10 20 50 mc} --fraction 0.3 2>&1 | tail -8
  fi
  for v in ${ALONE_VARIANTS:-saved eager}; do cp $R/${p}_alone_$v/eval/eval_info.json $B/${p}_alone_${v}_eval_info.json 2>/dev/null; done
  tail -c 1500 $R/$p.log | grep -av Warning
  if test -d $R/$p/uncertainty; then  # the RND stages ran: scores summary, detection, plots
    mkdir -p $B/uncertainty && cp $R/$p/uncertainty/*.json $R/$p/uncertainty/*.md $B/uncertainty/ 2>/dev/null
    cp -r $R/$p/uncertainty/verification $B/uncertainty/ 2>/dev/null
    find $B/uncertainty -name 'timestep_*' ! -name 'timestep_0[04]0_*' -delete
    # the per-episode scores without their 16x16 maps (~2 KB a step with them): detection can
    # then be rerun here (rnd.scores_dir=<returned>/uncertainty/scores), other windows and q
    python3 - $R/$p/uncertainty $B/uncertainty/scores <<'PY'
import pathlib, sys, torch
src, dst = map(pathlib.Path, sys.argv[1:])
for f in src.glob("**/episode_*_uncertainty.pt"):
    d = torch.load(f, weights_only=False)
    for step in d["rollout_steps"]:
        step["uncertainty"].pop("spatial_maps", None)
    out = dst / f.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(d, out)
PY
    cat $R/$p/uncertainty/detection.md 2>/dev/null
  fi
  tar -czf $OUT/$p.tar.gz -C /tmp/back $p
done
