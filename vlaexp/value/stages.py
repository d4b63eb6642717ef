"""Stages `value_eval` (the value function's metrics on the test split, as JSON, and its
per-frame predictions on the test and validation splits, as CSV) and
`value_advantage` (advantages of every frame, in a derived LeRobotDataset)."""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from vlaexp.data.datamodule import datamodule_from_config
from vlaexp.errors import ConfigError, VlaexpError
from vlaexp.pipeline.context import RunContext
from vlaexp.uncertainty.visualize import log_to_wandb
from vlaexp.value.advantage import (
    n_step_advantages,
    positive_by_group,
    positive_by_outcome,
    positive_by_progress,
    positive_labels,
    write_advantage_dataset,
)
from vlaexp.value.labels import expected_value
from vlaexp.value.metrics import failure_kind, value_metrics
from vlaexp.value.model import load_value_function
from vlaexp.value.plots import plot_value_over_time

log = logging.getLogger(__name__)

METRICS_FILE = "value_eval.json"
PREDICTIONS_FILE = "value_predictions.csv"  # per test frame: what the metrics are computed from
# per validation frame, the same columns: what a calibration of the predictions may be fitted on
# without touching the test episodes
VAL_PREDICTIONS_FILE = "value_predictions_val.csv"


def _value_function(ctx: RunContext, stage: str):
    """The value function this run trained (or ``policy.path``), on the GPU if there is one."""
    path = ctx.artifacts.get("value_fn") or ctx.cfg.policy.get("path")
    if not path:
        raise ConfigError(
            f"{stage} needs a trained value function: run the `train` stage with "
            "policy=value_fn first, or set policy.path"
        )
    model = load_value_function(path)
    return model.cuda() if torch.cuda.is_available() else model


def run_datamodule(ctx: RunContext):
    """The DataModule the train stage of this run built (its frames preloaded once), else a
    new one from the config (a run that evaluates a value function it did not train)."""
    cfg = ctx.cfg
    datamodule = ctx.objects.get("datamodule")
    if datamodule is None:
        datamodule = datamodule_from_config(cfg.data, cfg.policy, ctx.artifacts.get("dataset"))
    return datamodule


def _predict(model, loader, without_step: bool = False) -> dict[int, dict[str, list]]:
    """Per episode, in loader order: frame indices, logits and value labels (and, with
    ``without_step``, the logits of the same frames with the step unknown: ``policy.time_dropout``)."""
    out: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    with torch.no_grad():
        for batch in loader:
            logits = model.logits(batch).float().cpu()
            blind = model.logits(batch, use_step=False).float().cpu() if without_step else None
            for i, ep in enumerate(batch["episode_index"].tolist()):
                out[ep]["frame"].append(int(batch["frame_index"][i]))
                out[ep]["logits"].append(logits[i])
                out[ep]["value"].append(batch["value"][i])
                if blind is not None:
                    out[ep]["logits_no_step"].append(blind[i])
    return out


def write_predictions(path: Path, predicted: dict[int, dict[str, list]], outcomes: dict) -> None:
    """One row per frame: episode, frame, success, true value, expected predicted value (and
    the expected value predicted without the step, where :func:`_predict` made it)."""
    no_step = any("logits_no_step" in p for p in predicted.values())
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        header = ["episode_index", "frame_index", "success", "value", "expected_value"]
        out.writerow(header + ["expected_value_no_step"] * no_step)
        for e in sorted(predicted):
            columns = [expected_value(torch.stack(predicted[e]["logits"])).tolist()]
            if no_step:
                columns.append(expected_value(torch.stack(predicted[e]["logits_no_step"])).tolist())
            ok = int(bool(outcomes[e]["success"]))
            for frame, value, *ev in zip(
                predicted[e]["frame"], predicted[e]["value"], *columns, strict=True
            ):
                out.writerow([e, frame, ok, f"{float(value):.6f}", *(f"{v:.6f}" for v in ev)])


def eval_stage(ctx: RunContext) -> None:
    """Load the value function trained by this run (or ``policy.path``), predict every frame
    of the test episodes and write :func:`value_metrics` to ``<run_dir>/value_eval.json``
    and value-over-time plots of the first ``policy.plot_episodes`` test episodes to
    ``<run_dir>/value_plots/`` (logged to wandb when it is a logger)."""
    cfg = ctx.cfg
    model = _value_function(ctx, "value_eval")
    datamodule = run_datamodule(ctx)
    datamodule.setup("test")
    if "test" not in datamodule.datasets:
        raise ConfigError("value_eval: the test split is empty (data.split gives it no episodes)")
    # a value function trained with policy.time_dropout also predicts with the step unknown
    without_step = getattr(model, "time_null", None) is not None
    predicted = _predict(model, datamodule.test_dataloader(), without_step)
    episodes = sorted(predicted)

    def metrics_of(key: str) -> dict:
        return value_metrics(
            [torch.stack(predicted[e][key]) for e in episodes],
            [torch.stack(predicted[e]["value"]).numpy().astype(np.float64) for e in episodes],
            [bool(datamodule.outcomes[e]["success"]) for e in episodes],
            [datamodule.outcomes[e].get("fault_frame") for e in episodes],
            [failure_kind(datamodule.outcomes[e]) for e in episodes],
        )

    metrics = metrics_of("logits")
    frames = sum(len(p["value"]) for p in predicted.values())
    result = {"episodes": episodes, "frames": frames, **metrics}
    if without_step:
        result["without_step"] = metrics_of("logits_no_step")
        ctx.log_metrics({f"value_eval_no_step/{k}": v for k, v in result["without_step"].items()})
    (ctx.run_dir / METRICS_FILE).write_text(json.dumps(result, indent=2))
    write_predictions(ctx.run_dir / PREDICTIONS_FILE, predicted, datamodule.outcomes)
    if "val" in datamodule.datasets:
        val = _predict(model, datamodule.split_dataloader("val"), without_step)
        write_predictions(ctx.run_dir / VAL_PREDICTIONS_FILE, val, datamodule.outcomes)
    ctx.log_metrics({f"value_eval/{k}": v for k, v in metrics.items()})
    images = {}
    for e in episodes[: cfg.policy.plot_episodes]:
        outcome = "success" if datamodule.outcomes[e]["success"] else "failure"
        images[f"value/episode_{e}"] = plot_value_over_time(
            ctx.run_dir / "value_plots" / f"episode_{e:05d}.png",
            torch.stack(predicted[e]["logits"]),
            torch.stack(predicted[e]["value"]).numpy(),
            f"episode {e} ({outcome}): {datamodule.outcomes[e]['task']}",
        )
    log_to_wandb(ctx.wandb_run, images)
    log.info("Value function on %d test episodes: %s", len(episodes), metrics)
    if without_step:
        log.info("... the same with the step unknown: %s", result["without_step"])


def advantage_stage(ctx: RunContext) -> None:
    """Predict the value of every frame of every episode (all splits), compute N-step
    advantages and each task's positive threshold (:mod:`vlaexp.value.advantage`), and write
    the dataset with ``advantage`` / ``advantage_positive`` columns to
    ``<run_dir>/advantage_dataset`` (summary: ``advantage.json``)."""
    cfg = ctx.cfg
    horizon, fraction = cfg.policy.advantage_horizon, cfg.policy.advantage_positive_fraction
    model = _value_function(ctx, "value_advantage")
    datamodule = run_datamodule(ctx)
    datamodule.setup("fit")
    predicted: dict[int, dict[str, list]] = {}
    for name in datamodule.datasets:
        predicted.update(_predict(model, datamodule.split_dataloader(name)))
    advantages, tasks = {}, {}
    for ep, p in predicted.items():
        order = np.argsort(p["frame"])
        if not np.array_equal(np.asarray(p["frame"])[order], np.arange(len(order))):
            raise VlaexpError(f"episode {ep}: frames missing from the value predictions")
        labels = torch.stack(p["value"]).numpy()[order]
        values = expected_value(torch.stack(p["logits"])).numpy()[order]
        advantages[ep] = n_step_advantages(labels, values, horizon)
        tasks[ep] = datamodule.outcomes[ep]["task"]
    eps, positive = positive_labels(advantages, tasks, fraction)
    out = write_advantage_dataset(
        datamodule.meta.root, ctx.run_dir / "advantage_dataset", advantages, positive
    )
    success = {ep: bool(datamodule.outcomes[ep]["success"]) for ep in advantages}

    def mean_over(keep: bool) -> float | None:
        sel = [advantages[e] for e in advantages if success[e] == keep]
        return float(np.concatenate(sel).mean()) if sel else None

    summary = {
        "dataset": str(out),
        "horizon": horizon,
        "positive_fraction_target": fraction,
        "episodes": len(advantages),
        "frames": int(sum(len(a) for a in advantages.values())),
        "thresholds": eps,
        "positive_fraction": {
            t: float(np.mean([p for e in advantages if tasks[e] == t for p in positive[e]]))
            for t in eps
        },
        "mean_advantage_successes": mean_over(True),
        "mean_advantage_failures": mean_over(False),
        # is the degraded behaviour labelled negative? (the share positive, per group)
        "positive_by_outcome": positive_by_outcome(
            positive, success, {e: datamodule.outcomes[e].get("fault_frame") for e in advantages}
        ),
        # is it the same in every phase of a success? (tenths of the episode)
        "success_positive_by_tenth": positive_by_progress(positive, success),
        # in a mix of clean and jittery demos: are the jittery ones labelled negative? (per std
        # of the noise the recorded actions got; empty where the recording does not say)
        "positive_by_action_noise": positive_by_group(
            positive, {e: datamodule.outcomes[e].get("action_noise") for e in advantages}
        ),
    }
    (ctx.run_dir / "advantage.json").write_text(json.dumps(summary, indent=2))
    ctx.artifacts["advantage_dataset"] = out
    log.info("Advantages of %d frames written to %s", summary["frames"], out)
