#!/usr/bin/env bash
# experiments/rvq_adaptive's closed-loop comparison on the GPU machine (device tool), one
# session on nvidia-h100-x4: the flow Pi0.5 (pi05_small-flow, +experiment=tabletop_spatial),
# the RVQ policy from scratch (rvq_policy_small-rvq) and the RVQ policy whose backbone starts
# from that flow Pi0.5 once it has trained (rvq_policy_small-bb: policy.backbone, fine-tuned;
# BB_STEPS, default 2000, at BB_LR, default 1e-4: a third of the from-scratch rate, as
# fine-tuning goes; the from-scratch job's tokenizer, so it fits none), each RVQ policy
# then compared with the flow one (dense / coarse / adaptive, rvq_compare: -cmp and -cmpbb,
# CMP_EPISODES seeds a task, default 15, at batch 1, CUDA graphs; adaptive also at the entropy
# thresholds CMP_THRESHOLDS, default [2.0,3.0]: at 1.0 the third session's policy refined 94%)
# on tabletop_spatial's recording (150 DART demos a task, recorded first with every core).
# On nvidia-h100-x2 (x4 not lent): TOK_JOB=rvq_policy_small-tok POLICIES="pi05_small-flow
# rvq_policy_small-tok rvq_policy_small-bb value_fn_small-jit rvq_policy_small-cmpbb" (card 0:
# the flow Pi0.5, the backbone job, its comparison; card 1: the tokenizer, issue 7's value run).
# Carry [".whl/dist", ".gl"]; issue the same call again at once until it prints that every job
# ended (tabletop_spatial_gpu.sh's DETACH=1: the jobs outlive a call on the warm machine):
#   MAX_STEPS_pi05_small=4000 MAX_STEPS_rvq_policy_small=4000 bash benchmarks/device/rvq_compare_gpu.sh
# Planned from the timings below: recording ~4 min, the flow Pi0.5 (4,000 steps: val loss 0.103
# there against 0.099 at 5,000 in the third session) done ~13 min in, the backbone job's 2,000
# steps ~7 min more, its comparison ~6 min: ~26 of a session's 30 device minutes.
# CMP_MONITORS adds adaptive rows of other monitors (rvq_compare.monitors), CMP_EXPECTED rows
# decoded from the expected codebook vectors (rvq_compare.expected_modes), e.g.
#   CMP_MONITORS="[{kind:gripper_distance,threshold:0.05},{kind:gripper_distance,threshold:0.1}]"
#   CMP_EXPECTED="[dense,coarse]"
# Measured (2x H200, 2026-11-27, the two-card POLICIES above, CMP_EPISODES=10): recording + install
# 248 s, the flow Pi0.5's 4,000 steps 9.4 min, the backbone job's 2,000 steps 4.4 min, its
# comparison 110 s (20 episodes a row, six rows); 60 episodes a row took 5.2 min on the warm
# machine (experiments/rvq_adaptive). Everything in three calls, 1,287 s held.
# Measured (4x H200, fifth session: the eight jobs of experiments/rvq_adaptive's command, the
# two value jobs on their own cards): recording + install 228 s, the flow Pi0.5 10.4 min with
# its setup, bb and bbhi's 3,000 steps 8.3 min each side by side, the value jobs 12.5 and
# 13.8 min with their own recordings; the comparisons began ~1,400 s in (three calls, 1,563 s
# held: plan at most 20 episodes a row there).
# Timings to plan with (H100 x4, 2026-11-27, beside the RECAP jobs): the recording ~7 min
# (shared), the flow Pi0.5 13.7 min for 5,000 steps, the RVQ policy's tokenizer fit 1.7 min
# then 12.7 min for 4,000 steps, the comparison at 5 seeds a task 93 s.
# EPISODES (default 150) demos a task: more demos lifted the CPU proxy's layer-1 accuracy where
# more steps did not (experiments/rvq_adaptive, sixth session). 300 demos took 228 s with the
# install on 60 cores, so 800 take roughly 8-10 min: raise COLLECT_S with it, e.g.
#   EPISODES=400 COLLECT_S=540 MAX_STEPS_pi05_small=3000 BB_STEPS=3000 ... bash benchmarks/device/rvq_compare_gpu.sh
# Measured (4x H100, seventh session, EPISODES=300 beside two value jobs): the 60-worker recording
# finished task 0 only by COLLECT_S=480 and was lost; the flow job recorded both tasks again with
# 12 workers in 7.8 min, then trained 3,000 steps in 8.9 min (62 s preload); the backbone job
# started ~27 min in, too late for the session. Plan ~35 min for this on H100s (experiments/rvq_adaptive).
# Measured (4x H100, eighth session: COLLECT_TAGS=" " EXTRA="data.collect.n_workers=28" EPISODES=300
# beside two value jobs): the jobs' own recordings 7.4 min (600 demos) and 6.8 min (issue 7's 400
# episodes) side by side, the tokenizer fit 1.7 min, the flow Pi0.5's 3,000 steps 10.3 min with
# its preload, bb and bbhi's 2,000 steps 6.6 min each side by side, each comparison 1.8 min
# (CMP_EPISODES=10, eight rows): every job ended in three calls, 1,703 s held.
set -u -o pipefail
R=/tmp/runs
# COLLECT_TAGS=" ": nothing is recorded up front; the first job to need a dataset records it
# (data.collect.n_workers in EXTRA) while the others wait on the cache's lock, so a recording
# that outlasts a call is never cut off and lost, as the seventh session's was
export EXPERIMENT=tabletop_spatial EPISODES=${EPISODES:-150} COLLECT_TAGS=${COLLECT_TAGS:-"-"} DETACH=1 CALL_S=${CALL_S:-565}
export POLICIES=${POLICIES:-"pi05_small-flow rvq_policy_small-rvq rvq_policy_small-bb rvq_policy_small-cmp rvq_policy_small-cmpbb"}
export EXTRA="callbacks.step_checkpoint.save_freq=500 ${EXTRA:-}" EXTRA_pi05_small="policy.compile=true ${EXTRA_pi05_small:-}"
export EXP_rvq=rvq_policy_tabletop_spatial EXP_bb=rvq_policy_tabletop_spatial
export EXP_cmp=rvq_policy_tabletop_spatial EXP_cmpbb=rvq_policy_tabletop_spatial
export EXTRA_flow="stages=[collect,train]" EXTRA_rvq="stages=[collect,tokenizer_fit,train]"
# TOK_JOB: the job whose tokenizer the backbone job uses: the from-scratch one (default), or
# rvq_policy_small-tok, which fits the tokenizer and trains nothing (a machine of two cards:
# the from-scratch row is then the earlier session's)
export EXP_tok=rvq_policy_tabletop_spatial EXTRA_tok="stages=[collect,tokenizer_fit]" TOK=$R/${TOK_JOB:-rvq_policy_small-rvq}
B=${BB_STEPS:-2000}
# the fine-tune on a flow job's backbone (its run dir: $1), and a comparison's rows against it
finetune_on() { echo "policy.backbone=$1/checkpoints/last/pretrained_model policy.action_tokenizer=$TOK \
trainer.max_steps=$B policy.scheduler.decay_steps=$B policy.optimizer.lr=${BB_LR:-1e-4}"; }
rows_against() { echo "eval.n_episodes=${CMP_EPISODES:-15} rvq_compare.flow_policy=$1 \
rvq_compare.thresholds=${CMP_THRESHOLDS:-[2.0,3.0]} rvq_compare.monitors=${CMP_MONITORS:-[]} \
rvq_compare.expected_modes=${CMP_EXPECTED:-[]}"; }
export EXTRA_bb="stages=[collect,train] $(finetune_on $R/pi05_small-flow)"
export WAIT_bb="$R/pi05_small-flow.rc $TOK/tokenizer/tokenizer.pt"
# rvq_policy_small-bbhi: the same fine-tune at BBHI_LR (default 3e-4): the code head starts
# from random weights, and at 1e-4 its layer-1 accuracy was still rising at the end
export EXP_bbhi=rvq_policy_tabletop_spatial WAIT_bbhi="$WAIT_bb" EXP_cmpbbhi=rvq_policy_tabletop_spatial
export EXTRA_bbhi="$EXTRA_bb policy.optimizer.lr=${BBHI_LR:-3e-4}"
# value_fn_small-jit (issue 7's question for the next RECAP run, on a card the jobs above leave
# idle): the value function and Monte-Carlo advantages on advantage_tabletop_jitter's clean and
# jittery demos (recorded in the job, beside the training), positive_by_action_noise in its
# advantage.json: are the jittery demos' frames the negative ones?
export EXP_jit=advantage_tabletop_jitter_value MAX_STEPS_value_fn_small=${MAX_STEPS_value_fn_small:-2400}
export EXTRA_jit="data.collect.episodes_per_task=200 data.collect.n_workers=${JIT_WORKERS:-16}"
# value_fn_small-pert: issue 7's offline targets on faults and perturbed failures
# (+experiment=value_tabletop_perturbed; midpoint_auroc_by_failure_kind in its value_eval.json)
export EXP_pert=value_tabletop_perturbed EXTRA_pert="$EXTRA_jit"
CMP="stages=[rvq_compare] $(rows_against $R/pi05_small-flow)"
export EXTRA_cmp="$CMP policy.path=$R/rvq_policy_small-rvq" WAIT_cmp="$R/rvq_policy_small-rvq.rc $R/pi05_small-flow.rc"
export EXTRA_cmpbb="$CMP policy.path=$R/rvq_policy_small-bb ${CMPBB:-}" WAIT_cmpbb="$R/rvq_policy_small-bb.rc $R/pi05_small-flow.rc"
# rvq_policy_small-cmpbbx: a second comparison of the backbone job's policy on another card,
# with CMPX's overrides (CMPBB's are the first job's alone), so that one comparison's rows run on two cards side by
# side (the same seeds in each); e.g. the RVQ rows of expected vectors in one and the argmax
# dense and flow rows in the other:
#   CMPBB="rvq_compare.modes=[] rvq_compare.flow_policy=null" CMPX="rvq_compare.modes=[dense] rvq_compare.expected_modes=[]"
export EXP_cmpbbx=rvq_policy_tabletop_spatial WAIT_cmpbbx="$WAIT_cmpbb" EXTRA_cmpbbx="$CMP policy.path=$R/rvq_policy_small-bb ${CMPX:-}"
export EXTRA_cmpbbhi="$CMP policy.path=$R/rvq_policy_small-bbhi" WAIT_cmpbbhi="$R/rvq_policy_small-bbhi.rc $R/pi05_small-flow.rc"
# CHAINS="0 1 2": the whole chain once per training seed, side by side, since one training run
# is not the recipe (the ninth session's flow Pi0.5 and bb, same recipe and data as the
# eighth's and the same offline figures to the third digit, scored 8 and 13 of the 20 seeds
# where the eighth's scored 15 and 19): for each k, pi05_small-flow<k> (seed=k), then
# rvq_policy_small-bbc<k> (seed=k, on flow<k>'s backbone, TOK_JOB's tokenizer) trains and runs
# its comparison in the same job (the rows of CMP_*, then CMPC's overrides, and flow<k>'s row),
# so three chains and the tokenizer job are 7 jobs, inside the 8 files a call returns:
#   CHAINS="0 1 2" TOK_JOB=rvq_policy_small-tok POLICIES="rvq_policy_small-tok pi05_small-flow0 pi05_small-flow1 \
#     pi05_small-flow2 rvq_policy_small-bbc0 rvq_policy_small-bbc1 rvq_policy_small-bbc2" ...
for k in ${CHAINS:-}; do
  export "EXTRA_flow$k=stages=[collect,train] seed=$k" "EXP_bbc$k=rvq_policy_tabletop_spatial"
  export "WAIT_bbc$k=$R/pi05_small-flow$k.rc $TOK/tokenizer/tokenizer.pt"
  export "EXTRA_bbc$k=stages=[collect,train,rvq_compare] seed=$k $(finetune_on $R/pi05_small-flow$k) \
$(rows_against $R/pi05_small-flow$k) ${CMPC:-}"
done
bash benchmarks/device/tabletop_spatial_gpu.sh "[0,1]" 00:02:00:00 99999
for p in rvq_policy_small-cmp rvq_policy_small-cmpbb rvq_policy_small-cmpbbx rvq_policy_small-cmpbbhi \
  $(for k in ${CHAINS:-}; do echo rvq_policy_small-bbc$k; done); do
  cat $R/$p/rvq_compare/comparison.md 2>/dev/null
done
ALL=1; for p in $POLICIES; do test -e $R/$p.rc || ALL=0; done
test $ALL = 1 && echo "every job ended" || echo "jobs still running: issue the call again"
