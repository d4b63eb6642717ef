"""Stage ``rvq_compare``: dense, coarse and adaptive RVQ decoding (and the flow-matching
Pi0.5) side by side in closed loop, on the same evaluation seeds in one run.

For each decoding the trained RVQ policy runs the ``eval`` settings' episodes; every chunk's
prediction is timed (wall clock, synchronized on a GPU), so the table reports success,
latency per chunk (median), policy time per environment step (the chunks' mean time without
the first one, times the chunks over the steps: the first call captures CUDA graphs, its time
is reported apart), the share of chunks refined to every layer, and the mean number of layers
decoded. Both policies act in one execution mode (``rvq_compare.cuda_graphs``), neither
compiled (the RVQ policy cannot be), so their latencies compare like for like.
The monitor of adaptive decoding is this run's ``tokenizer.monitor`` (the policy's own, saved
with it, unless overridden here), and ``rvq_compare.thresholds`` adds an adaptive row per
threshold (``adaptive_t<threshold>``): the trade between success and refined share, from one
trained policy; ``rvq_compare.monitors`` one per monitor of any kind
(``adaptive_<kind>_<threshold>``, e.g. the gripper's distance to the object), and
``rvq_compare.expected_modes`` repeats decodings with ``policy.code_decoding=expected``
(``<mode>_expected``: each layer's expected codebook vector instead of its most likely code).
Latency against dense is given per chunk (medians) and per step (means: what the drafts
saved). Outputs: ``<run>/rvq_compare/{comparison.json, comparison.md}`` and each row's
``eval_info.json`` under ``<run>/rvq_compare/<row>/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from vlaexp.config.tokenizer import MonitorConfig
from vlaexp.errors import ConfigError
from vlaexp.pipeline.context import RunContext
from vlaexp.pipeline.evaluate import check_action_dim
from vlaexp.policies.factory import load_pretrained
from vlaexp.policies.pi0.model import uncompile_sampling
from vlaexp.sim.runner import SimRunner
from vlaexp.sim.workers import SuiteSpec
from vlaexp.tokenizers.adaptive import MONITORS

log = logging.getLogger(__name__)

OUT_DIR = "rvq_compare"


class ChunkTimer:
    """Times every ``predict_action_chunk`` call of ``policy`` while active (a context
    manager), and collects what RVQ policies report about each chunk (``last_chunk``)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.seconds: list[float] = []
        self.refined: list[bool] = []
        self.layers: list[int] = []

    def __enter__(self) -> ChunkTimer:
        policy, original = self.policy, self.policy.predict_action_chunk
        cuda = policy.device.type == "cuda"

        def timed(batch: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = original(batch, *args, **kwargs)
            if cuda:
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - t0)
            info = getattr(policy, "last_chunk", None)
            if info:
                self.refined += info["refined"].tolist()
                self.layers += info["layers"].tolist()
            return out

        policy.predict_action_chunk = timed  # an instance attribute shadows the method
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.policy.predict_action_chunk


def steady_ms_per_step(seconds: list[float], steps: int) -> float | None:
    """Policy milliseconds per environment step at the steady rate: the chunks' mean time
    without the first (which captures the CUDA graphs, or compiles: seconds), times the
    number of chunks, over the steps they served."""
    if not seconds:
        return None
    warm = seconds[1:] or seconds
    return 1e3 * float(np.mean(warm)) * len(seconds) / max(steps, 1)


def act_like(policy: Any, cuda_graphs: bool) -> Any:
    """``policy`` set to act in the comparison's one mode: CUDA graphs on or off
    (``rvq_compare.cuda_graphs``) and nothing compiled. A flow policy trained with
    ``policy.compile=true`` comes back compiled; the RVQ policy cannot be, so timing only
    one of them compiled would compare two different things."""
    if getattr(policy.config, "compile", False):
        uncompile_sampling(policy.model)
    if hasattr(policy.config, "cuda_graphs"):
        policy.config = replace(policy.config, cuda_graphs=cuda_graphs, compile=False)
    return policy


def _evaluate(ctx: RunContext, policy: Any, label: str) -> dict[str, Any]:
    cfg = ctx.cfg
    spec = SuiteSpec(
        OmegaConf.to_container(cfg.task_suite, resolve=True), list(policy.config.cameras)
    )
    runner = SimRunner(
        spec,
        output_dir=ctx.run_dir / OUT_DIR / label,
        n_episodes=cfg.eval.n_episodes,
        task_ids=cfg.eval.task_ids,
        n_videos=0,
        max_steps=cfg.eval.max_steps,
        n_envs=cfg.eval.n_envs,
    )
    with ChunkTimer(policy) as timer:
        metrics = runner.run(policy)
    info = json.loads((ctx.run_dir / OUT_DIR / label / "eval_info.json").read_text())
    steps = sum(int(e["steps"]) for e in info["per_episode"])
    row = {
        "decoding": label,
        "pc_success": metrics["eval/pc_success"],
        "episodes": len(info["per_episode"]),
        "chunks": len(timer.seconds),
        "chunk_ms_median": 1e3 * float(np.median(timer.seconds)) if timer.seconds else None,
        "policy_ms_per_step": steady_ms_per_step(timer.seconds, steps),
        "first_chunk_ms": 1e3 * timer.seconds[0] if timer.seconds else None,
        "refined_share": float(np.mean(timer.refined)) if timer.refined else None,
        "mean_layers": float(np.mean(timer.layers)) if timer.layers else None,
        "code_decoding": getattr(policy.config, "code_decoding", None),  # RVQ rows only
    }
    log.info("rvq_compare %s: %s", label, row)
    return row


def compare_stage(ctx: RunContext) -> None:
    """Evaluate this run's RVQ policy (or ``policy.path``) under each of
    ``rvq_compare.modes``, then ``rvq_compare.flow_policy`` if given."""
    from vlaexp.policies.rvq import DECODINGS, RVQPolicy

    cfg = ctx.cfg
    modes = list(cfg.rvq_compare.modes or [])
    if any(m not in DECODINGS for m in modes):
        raise ConfigError(f"rvq_compare.modes must be a list of {list(DECODINGS)}, got {modes}")
    if any(float(t) < 0 for t in cfg.rvq_compare.thresholds or []):
        raise ConfigError(f"rvq_compare.thresholds must be >= 0, got {cfg.rvq_compare.thresholds}")
    expected_modes = list(cfg.rvq_compare.get("expected_modes") or [])
    if any(m not in DECODINGS for m in expected_modes):
        raise ConfigError(
            f"rvq_compare.expected_modes must be a list of {list(DECODINGS)}, got {expected_modes}"
        )
    # `modes` may be empty where other rows are asked for (one machine's cards splitting one
    # comparison's rows between jobs), never all of them
    rc = cfg.rvq_compare
    if not (modes or expected_modes or rc.thresholds or rc.get("monitors") or rc.flow_policy):
        raise ConfigError(
            "rvq_compare has no row to run: rvq_compare.modes, .thresholds, .monitors and "
            ".expected_modes are empty and .flow_policy is unset"
        )
    path = ctx.artifacts.get("policy") or cfg.policy.path
    if path is None:
        raise ConfigError("rvq_compare needs a trained RVQ policy: run `train` or set policy.path")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = load_pretrained(path, setting="policy.path")
    if not isinstance(policy, RVQPolicy):
        raise ConfigError(f"rvq_compare compares RVQ decodings; {path} is a '{policy.config.type}'")
    check_action_dim(policy.config.action_dim)
    graphs = bool(cfg.rvq_compare.cuda_graphs)
    act_like(policy, graphs).to(device)
    # the monitor this run's config describes (a policy saved with another threshold, or a
    # sweep's override of tokenizer.monitor, must not be reported as what it did not use)
    monitor = (
        OmegaConf.to_container(cfg.tokenizer.monitor, resolve=True)
        if "monitor" in cfg.tokenizer
        else dataclasses.asdict(policy.monitor_config)
    )
    policy.set_monitor(monitor)
    # the adaptive rows beyond `modes`: thresholds of the run's monitor kind, then monitors
    # of any kind (each checked before any row runs)
    extra = [
        (f"adaptive_t{float(t):g}", {"kind": monitor["kind"], "threshold": float(t)})
        for t in cfg.rvq_compare.thresholds or []
    ]
    extra += monitor_rows(cfg.rvq_compare.get("monitors") or [])
    out = ctx.run_dir / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "policy": str(path),
        "flow_policy": None
        if not cfg.rvq_compare.flow_policy
        else str(cfg.rvq_compare.flow_policy),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "monitor": monitor,
        "rows": [],
    }
    rows = result["rows"]

    def add(row: dict[str, Any], **fields: Any) -> None:
        # the table is written again after every row: a crash in a later row (or a machine
        # taken back mid-run) keeps the rows before it
        rows.append({**row, **fields})
        with_ratios_to_dense(rows)
        (out / "comparison.json").write_text(json.dumps(result, indent=1))
        (out / "comparison.md").write_text(comparison_markdown(result))

    for mode in modes:
        policy.config = replace(policy.config, decoding=mode)
        extra_fields = {"threshold": monitor["threshold"]} if mode == "adaptive" else {}
        add(_evaluate(ctx, policy, mode), **extra_fields)
    policy.config = replace(policy.config, decoding="adaptive")
    for label, fields in extra:
        policy.set_monitor({**monitor, **fields})
        row = _evaluate(ctx, policy, label)
        add(row, monitor={**monitor, **fields}, threshold=float(fields["threshold"]))
    policy.set_monitor(monitor)
    code_decoding = policy.config.code_decoding
    for mode in expected_modes:
        policy.config = replace(policy.config, decoding=mode, code_decoding="expected")
        add(_evaluate(ctx, policy, f"{mode}_expected"))
    policy.config = replace(policy.config, code_decoding=code_decoding)
    if cfg.rvq_compare.flow_policy:
        flow = load_pretrained(cfg.rvq_compare.flow_policy, setting="rvq_compare.flow_policy")
        act_like(flow, graphs)
        add(_evaluate(ctx, flow.to(device), f"flow_{flow.config.type}"))
    ctx.log_metrics(
        {f"rvq_compare/{r['decoding']}/pc_success": r["pc_success"] for r in rows}
        | {
            f"rvq_compare/{r['decoding']}/chunk_ms": r["chunk_ms_median"]
            for r in rows
            if r["chunk_ms_median"] is not None
        }
    )
    log.info("RVQ decoding comparison in %s", out / "comparison.md")


def with_ratios_to_dense(rows: list[dict[str, Any]]) -> None:
    """Each row's latency and success against the dense row's, once there is one (the dense
    row of expected vectors where no argmax one ran)."""
    dense = next((r for r in rows if r["decoding"] == "dense"), None) or next(
        (r for r in rows if r["decoding"] == "dense_expected"), None
    )
    for r in rows:
        if dense and dense["chunk_ms_median"]:
            r["latency_vs_dense"] = r["chunk_ms_median"] / dense["chunk_ms_median"]
            r["success_vs_dense_points"] = r["pc_success"] - dense["pc_success"]
        # the mean over steps: an adaptive row's median chunk is a refined one as soon as it
        # refines over half of them, so the chunk ratio hides what the drafts saved
        if dense and dense["policy_ms_per_step"] and r["policy_ms_per_step"] is not None:
            r["step_latency_vs_dense"] = r["policy_ms_per_step"] / dense["policy_ms_per_step"]


def monitor_rows(entries: Any) -> list[tuple[str, dict[str, Any]]]:
    """``rvq_compare.monitors`` as (row label, monitor fields) pairs, each checked before any
    row runs (a typo found after an hour of closed-loop rows costs the hour)."""
    known = {f.name for f in dataclasses.fields(MonitorConfig)}
    out = []
    for entry in entries:
        fields = OmegaConf.to_container(entry) if OmegaConf.is_config(entry) else entry
        if not isinstance(fields, dict) or "kind" not in fields or "threshold" not in fields:
            raise ConfigError(
                "each rvq_compare.monitors entry names its kind and threshold, e.g. "
                f"{{kind: gripper_distance, threshold: 0.05}}; got {entry}"
            )
        if set(fields) - known:
            raise ConfigError(
                f"rvq_compare.monitors entry {fields}: unknown fields {sorted(set(fields) - known)} "
                f"(tokenizer.monitor has {sorted(known)})"
            )
        if fields["kind"] not in MONITORS or float(fields["threshold"]) < 0:
            raise ConfigError(
                f"rvq_compare.monitors entry {fields}: kind must be one of {list(MONITORS)} "
                "and threshold >= 0"
            )
        out.append((f"adaptive_{fields['kind']}_{float(fields['threshold']):g}", fields))
    return out


def comparison_markdown(result: dict[str, Any]) -> str:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        f"Device: {result['device']}; policy `{result['policy']}`.",
        "",
        "| decoding | success % | episodes | chunk ms (median) | policy ms / env step "
        "| first chunk ms | refined share | mean layers | chunk latency vs dense "
        "| step latency vs dense |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['decoding']} | {r['pc_success']:.1f} | {r['episodes']} | "
            f"{f(r['chunk_ms_median'], '.2f')} | {f(r['policy_ms_per_step'], '.2f')} | "
            f"{f(r.get('first_chunk_ms'), '.1f')} | {f(r['refined_share'], '.2f')} | {f(r['mean_layers'], '.2f')} | "
            f"{f(r.get('latency_vs_dense'), '.2f')} | {f(r.get('step_latency_vs_dense'), '.2f')} |"
        )
    return "\n".join(lines) + "\n"
