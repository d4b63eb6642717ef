"""The RND uncertainty stages: ``rnd_collect``, ``rnd_train``, ``rnd_score``, ``rnd_detect``,
``rnd_visualize``.

Each stage runs alone: the expensive outputs (token stores, trained RNDs) are content-addressed
artifacts in the cache (:func:`vlaexp.pipeline.cache.cached_artifact`), so a stage whose
inputs are missing from this run builds them, or finds them built by an earlier run with
the same inputs. Scores and reports go to the run dir (``uncertainty/``), or are read from
``rnd.scores_dir`` when it is set.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

import vlaexp
from vlaexp.errors import ConfigError, VlaexpError
from vlaexp.pipeline.cache import cached_artifact
from vlaexp.pipeline.context import RunContext

log = logging.getLogger(__name__)

TOKENS_FORMAT = 1  # bump when what a token store holds changes: old caches are rebuilt
SCORES_DIR = "uncertainty"
_LIBERO_TYPES = {
    "libero_spatial": "spatial",
    "libero_object": "object",
    "libero_goal": "goal",
    "libero_10": "long",
    "libero_90": "long",
}


# ----------------------------------------------------------------------------- inputs
def task_type(cfg: Any) -> str:
    """``rnd.task_type``, else the suite's type (tabletop ``task_type``, LIBERO suite name)."""
    if cfg.rnd.task_type:
        return str(cfg.rnd.task_type)
    suite = cfg.task_suite
    if suite.get("task_type"):
        return str(suite.task_type)
    name = str(suite.get("suite") or suite.name)
    return _LIBERO_TYPES.get(name, name)


def rnd_cameras(cfg: Any, policy: Any) -> list[str]:
    cams = list(cfg.rnd.cameras) if cfg.rnd.cameras else list(policy.config.cameras)
    unknown = sorted(set(cams) - set(policy.config.cameras))
    if unknown:
        raise ConfigError(
            f"rnd.cameras {unknown} are not cameras of the policy {list(policy.config.cameras)}"
        )
    return cams


def policy_source(ctx: RunContext) -> tuple[str, dict[str, Any]]:
    """Where the policy comes from and an identity of its weights for cache keys."""
    cfg = ctx.cfg
    path = ctx.artifacts.get("policy") or cfg.policy.get("path")
    if path:
        from vlaexp.training.pretrained import resolve_pretrained

        directory = resolve_pretrained(path, "policy.path")
        weights = directory / "model.safetensors"
        stat = weights.stat()
        # size and mtime identify a checkpoint file without hashing gigabytes of weights
        return "path", {"path": str(directory), "size": stat.st_size, "mtime": stat.st_mtime_ns}
    if cfg.policy.get("pretrained"):
        return "pretrained", {"pretrained": str(cfg.policy.pretrained)}
    raise ConfigError(
        "The RND stages read a trained policy's vision tokens: run `train` first (add it to "
        "`stages`), or set policy.path to a pretrained_model dir / run dir, or policy.pretrained "
        "to published weights (e.g. lerobot/pi05_libero_finetuned)"
    )


def load_policy(ctx: RunContext) -> Any:
    """The run's policy on the fastest device, in eval mode; cached in the context."""
    if "rnd_policy" in ctx.objects:
        return ctx.objects["rnd_policy"]
    from vlaexp.policies.factory import load_pretrained, make_policy

    kind, ident = policy_source(ctx)
    policy = (
        load_pretrained(ident["path"], setting="policy.path")
        if kind == "path"
        else make_policy(ctx.cfg.policy)
    )
    if not hasattr(policy, "vision_tokens"):
        raise ConfigError(
            f"policy type '{policy.config.type}' has no vision tokens to score: RND needs a "
            "Pi0 / Pi0.5 policy"
        )
    policy.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    ctx.objects["rnd_policy"] = policy
    return policy


def dataset_source(ctx: RunContext) -> tuple[str | None, Path | None]:
    cfg = ctx.cfg
    if cfg.data.source == "collect":
        root = ctx.artifacts.get("dataset")
        if root is None:
            raise ConfigError(
                "rnd_collect reads the demonstrations of data.source=collect: add `collect` to "
                "`stages` before it, or use data=lerobot with data.root / data.repo_id"
            )
        return None, Path(root)
    return cfg.data.repo_id, (Path(cfg.data.root) if cfg.data.root else None)


# ----------------------------------------------------------------------------- collect
def collect_stage(ctx: RunContext) -> None:
    """Vision tokens of every frame of the successful demonstrations, ``tokens_per_frame``
    sampled per camera (seeded), in one memory-mapped store per camera."""
    ctx.artifacts["rnd_tokens"] = token_stores(ctx)


def token_stores(ctx: RunContext) -> Path:
    cfg = ctx.cfg
    _, ident = policy_source(ctx)
    repo_id, root = dataset_source(ctx)
    from vlaexp.data.datamodule import open_metadata

    open_metadata(repo_id, root)  # an unreachable dataset fails here, before a model is built
    spec = {
        "format": TOKENS_FORMAT,
        "vlaexp": vlaexp.__version__,
        "policy": ident,
        "dataset": {"repo_id": repo_id, "root": str(root) if root else None},
        "camera_keys": OmegaConf.to_container(cfg.data.camera_keys, resolve=True),
        "cameras": list(cfg.rnd.cameras) if cfg.rnd.cameras else None,
        "tokens_per_frame": cfg.rnd.tokens_per_frame,
        "seed": cfg.rnd.seed,
        "task_type": task_type(cfg),
    }

    def build(tmp: Path) -> dict[str, Any]:
        from vlaexp.uncertainty.collect import collect_demo_tokens

        policy = load_policy(ctx)
        return collect_demo_tokens(
            policy,
            tmp / task_type(cfg),
            repo_id=repo_id,
            root=root,
            camera_keys=dict(cfg.data.camera_keys),
            cameras=rnd_cameras(cfg, policy),
            tokens_per_frame=cfg.rnd.tokens_per_frame,
            seed=cfg.rnd.seed,
            batch_frames=cfg.rnd.batch_frames,
            video_backend=cfg.data.video_backend,
        )

    out = cached_artifact(cfg.paths.cache_dir, "rnd_tokens", spec, build, label=task_type(cfg))
    summary = json.loads((out / task_type(cfg) / "summary.json").read_text())
    ctx.metrics["rnd/tokens_frames"] = float(summary["frames"])
    return out / task_type(cfg)


# ----------------------------------------------------------------------------- train
def train_stage(ctx: RunContext) -> None:
    """One RND per camera on the shared Trainer (early stopping on held-out tokens)."""
    ctx.artifacts["rnd_models"] = trained_models(ctx)


def trained_models(ctx: RunContext) -> Path:
    from vlaexp.uncertainty.collect import read_summary

    cfg = ctx.cfg
    stores = Path(ctx.artifacts.get("rnd_tokens") or token_stores(ctx))
    summary = read_summary(stores)
    train_cfg = OmegaConf.to_container(cfg.rnd.train, resolve=True)
    spec = {"tokens": str(stores.resolve()), "train": train_cfg, "seed": cfg.rnd.seed}

    def build(tmp: Path) -> dict[str, Any]:
        from vlaexp.uncertainty.train import train_rnd

        results = {}
        for cam in summary["cameras"]:
            results[cam] = train_rnd(
                stores / cam,
                tmp / cam,
                cfg,
                loggers=ctx.loggers,
                camera=cam,
                task_type=summary["task_type"],
            )
        (tmp / "models.json").write_text(json.dumps(results, indent=1))
        return results

    out = cached_artifact(
        cfg.paths.cache_dir, "rnd_models", spec, build, label=summary["task_type"]
    )
    results = json.loads((out / "models.json").read_text())
    for cam, r in results.items():
        ctx.metrics[f"rnd/{cam}/val_loss"] = float(r["val_loss"])
    return out


def load_models(
    models_dir: Path,
    device: torch.device | str,
    precision: str = "float32",
    projection: torch.nn.Linear | None = None,
    check: Any = None,
) -> dict[str, Any]:
    """Every camera's trained RND, scoring in ``precision`` (``rnd.score.precision``); with
    ``projection`` (the policy's linear vision projector) folded in, reading the features
    before it (:func:`~vlaexp.uncertainty.rnd.fold_projection`). ``check(camera, model)``
    sees each float32 RND (with its ``meta``) before it is folded or converted."""
    from vlaexp.uncertainty.rnd import check_precision, fold_projection, for_inference
    from vlaexp.uncertainty.train import MODEL_FILE, load_rnd

    try:
        check_precision(precision, device)
    except ValueError as e:
        raise ConfigError(f"rnd.score.precision={precision}: {e}") from e
    results = json.loads((Path(models_dir) / "models.json").read_text())
    models = {}
    for cam in results:
        model = load_rnd(Path(models_dir) / cam / MODEL_FILE, device, precision=None)
        if check is not None:
            check(cam, model)
        if projection is not None:
            model = fold_projection(model, projection)
        models[cam] = for_inference(model, precision)
    return models


# ----------------------------------------------------------------------------- score
def scores_dir(ctx: RunContext) -> Path:
    return Path(ctx.cfg.rnd.scores_dir) if ctx.cfg.rnd.scores_dir else ctx.run_dir / SCORES_DIR


def split_by_seed(n_per_task: int, fractions: list[float]) -> list[str]:
    """Split names of a task's episodes in seed order: calib, then val, then test."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"rnd.score.split must be 3 fractions summing to 1, got {fractions}")
    n_cal = round(n_per_task * fractions[0])
    n_val = round(n_per_task * fractions[1])
    return ["calib"] * n_cal + ["val"] * n_val + ["test"] * (n_per_task - n_cal - n_val)


def score_stage(ctx: RunContext) -> None:
    """Roll the policy out on the suite's eval seeds and score every step with the RNDs.

    A task's episodes are split by seed order into calibration, validation and test rollouts
    (``rnd.score.split``): thresholds are calibrated on the first, window and quantile chosen
    on the second, and only the third is reported. With ``rnd.score.ood`` (perturbation
    settings of the suite, e.g. ``{distractors: 2, lighting: 0.5}``) a second pass rolls out
    ``rnd.score.n_ood_episodes`` per task in the perturbed scenes: out-of-distribution test
    rollouts (``<suite>_<task>_ood``, metadata ``ood: true``), never used to calibrate."""
    cfg = ctx.cfg
    if cfg.rnd.scores_dir:
        raise ConfigError(
            "rnd.scores_dir reads scores of an earlier run; drop it to score this run's rollouts"
        )
    sc = cfg.rnd.score
    suite_cfg = OmegaConf.to_container(cfg.task_suite, resolve=True)
    task_ids = sc.task_ids if sc.task_ids is not None else cfg.eval.task_ids
    splits = split_by_seed(sc.n_episodes, list(sc.split))
    first = _score_rollouts(ctx, suite_cfg, task_ids, sc.n_episodes, splits, ood=False, first=0)
    if sc.ood:
        perturbed = {**suite_cfg, "perturbation": {**suite_cfg.get("perturbation", {}), **sc.ood}}
        n = sc.n_ood_episodes
        _score_rollouts(ctx, perturbed, task_ids, n, ["test"] * n, ood=True, first=first)


def _score_rollouts(
    ctx: RunContext,
    suite_cfg: dict[str, Any],
    task_ids: Any,
    n: int,
    splits: list[str],
    ood: bool,
    first: int,
) -> int:
    """One SimRunner pass with the RND monitor; episode indices start at ``first``. Returns
    the index after the last episode."""
    from vlaexp.pipeline.evaluate import check_action_dim
    from vlaexp.sim.runner import SimRunner
    from vlaexp.sim.workers import SuiteSpec
    from vlaexp.uncertainty.monitor import RNDMonitor

    cfg = ctx.cfg
    policy = load_policy(ctx)
    check_action_dim(policy.config.action_dim)
    models = checked_models(ctx, policy)
    out = ctx.run_dir / SCORES_DIR / ("ood" if ood else "")
    runner = SimRunner(
        SuiteSpec(suite_cfg, list(policy.config.cameras)),
        output_dir=out,
        n_episodes=n,
        task_ids=task_ids,
        n_videos=0,
        max_steps=cfg.eval.max_steps,
        n_envs=cfg.rnd.score.n_envs,
    )
    seeds = {t: runner.suite.eval_seeds(t)[:n] for t in runner.task_ids}
    suite = runner.suite.name + ("_ood" if ood else "")

    def split_of(row: dict[str, Any]) -> str:
        return splits[seeds[row["task_id"]].index(row["seed"])]

    monitor = RNDMonitor(
        policy,
        models,
        ctx.run_dir / SCORES_DIR,
        runner.suite.name,
        split_of=split_of,
        save_maps=cfg.rnd.score.save_maps,
        keep_frames=cfg.rnd.score.keep_frames,
        first_episode=first,
        ood=ood,
    )
    jobs = [(t, s) for t in runner.task_ids for s in seeds[t]]
    for ix, (task_id, seed) in enumerate(jobs):
        if split_of({"task_id": task_id, "seed": seed}) == "test":
            monitor.want_frames(first + ix, task_id)
    runner.monitor = monitor
    metrics = runner.run(policy)
    name = "rnd/ood_rollout_pc_success" if ood else "rnd/rollout_pc_success"
    ctx.log_metrics(
        {name: metrics["eval/pc_success"], "rnd/score_ms_per_step": monitor.ms_per_step}
    )
    log.info(
        "Scored %d %s rollouts (%.1f%% success) in %s, %.1f ms of RND per env step",
        len(monitor.writer.written),
        suite,
        metrics["eval/pc_success"],
        out,
        monitor.ms_per_step,
    )
    return first + len(jobs)


def checked_models(ctx: RunContext, policy: Any) -> dict[str, Any]:
    """The run's RNDs on the policy's device, checked against what they will score: one per
    scored camera, trained for this task type and for the width of this policy's tokens."""
    if "rnd_models" in ctx.objects:
        return ctx.objects["rnd_models"]
    models_dir = Path(ctx.artifacts.get("rnd_models") or trained_models(ctx))
    want_type = task_type(ctx.cfg)
    projector = policy.model.projector
    width = projector.out_features

    def check(cam: str, model: Any) -> None:
        meta = model.meta
        problems = []
        if meta["camera"] != cam:
            problems.append(f"trained for camera '{meta['camera']}'")
        if meta["task_type"] != want_type:
            problems.append(f"trained for task type '{meta['task_type']}', not '{want_type}'")
        if meta["in_dim"] != width:
            problems.append(f"trained on {meta['in_dim']}-D tokens, the policy's are {width}-D")
        if problems:
            raise ConfigError(
                f"The RND for '{cam}' in {models_dir} does not fit: " + "; ".join(problems)
            )

    # folding pays where the projector widens its features (Pi0.5: 1152 -> 2048)
    fold = ctx.cfg.rnd.score.fold_projector and projector.in_features < projector.out_features
    models = load_models(
        models_dir,
        policy.device,
        ctx.cfg.rnd.score.precision,
        projection=projector if fold else None,
        check=check,
    )
    if fold:
        log.info(
            "RNDs read the %d-D vision features, the %d -> %d projector folded in",
            projector.in_features,
            projector.in_features,
            width,
        )
    missing = sorted(set(rnd_cameras(ctx.cfg, policy)) - set(models))
    if missing:
        raise ConfigError(f"No RND for camera(s) {missing} in {models_dir} (has {sorted(models)})")
    models = {c: models[c] for c in rnd_cameras(ctx.cfg, policy)}
    ctx.objects["rnd_models"] = models
    return models


def score_dataset_stage(ctx: RunContext) -> None:
    """Offline: score every frame of recorded episodes (``data``: any LeRobotDataset with a
    success flag, e.g. rollouts written with ``eval.record_dataset=true``)."""
    from vlaexp.uncertainty.collect import score_recorded_episodes

    cfg = ctx.cfg
    policy = load_policy(ctx)
    models = checked_models(ctx, policy)
    repo_id, root = (
        (None, Path(ctx.artifacts["rollouts"]))
        if "rollouts" in ctx.artifacts
        else dataset_source(ctx)
    )
    written = score_recorded_episodes(
        policy,
        models,
        ctx.run_dir / SCORES_DIR,
        repo_id=repo_id,
        root=root,
        camera_keys=dict(cfg.data.camera_keys),
        group=cfg.task_suite.name,
        save_maps=cfg.rnd.score.save_maps,
        video_backend=cfg.data.video_backend,
    )
    log.info("Scored %d recorded episodes into %s", len(written), ctx.run_dir / SCORES_DIR)


def require_scores(ctx: RunContext) -> list[Path]:
    from vlaexp.uncertainty.monitor import SCORES_GLOB

    root = scores_dir(ctx)
    files = sorted(root.glob(SCORES_GLOB))
    if not files:
        raise VlaexpError(
            f"No episode uncertainty files under {root}: run `rnd_score` first, or point "
            "rnd.scores_dir at the uncertainty/ dir of a run that scored rollouts"
        )
    return files


# ----------------------------------------------------------------------------- detect
DETECTION_FILE = "detection.json"


def _episodes_by_split(ctx: RunContext) -> dict[str, list[dict[str, Any]]]:
    """Scored episodes (metadata + the ``rnd.detect.score`` series) by split. Episodes scored
    offline carry no split: each group's are then cut calib/val/test in episode order."""
    from vlaexp.uncertainty.monitor import load_episode_scores, series

    key = ctx.cfg.rnd.detect.score
    by_group: dict[str, list[dict[str, Any]]] = {}
    for path in require_scores(ctx):
        data = load_episode_scores(path)
        ep = {**data["metadata"], "scores": series(data, key), "path": str(path)}
        by_group.setdefault(path.parent.name, []).append(ep)
    out: dict[str, list[dict[str, Any]]] = {"calib": [], "val": [], "test": []}
    for eps in by_group.values():
        eps.sort(key=lambda e: e["episode_index"])
        names = split_by_seed(len(eps), list(ctx.cfg.rnd.score.split))
        for ep, name in zip(eps, names, strict=True):
            out[ep["split"] or name].append(ep)
    return out


def detect_stage(ctx: RunContext) -> None:
    """Conformal alarms and detection metrics: thresholds calibrated on the successful
    calibration rollouts, window and quantile chosen on the validation rollouts, metrics
    reported on the test rollouts only (``uncertainty/detection.json`` and ``.md``); also at
    the fixed ``rnd.detect.report_q`` (window chosen on validation), under ``at_report_q``."""
    from vlaexp.uncertainty.detect import (
        calibrate,
        detection_metrics,
        episode_auroc,
        first_alarm,
        select_window_and_q,
    )

    cfg = ctx.cfg
    d = cfg.rnd.detect
    splits = _episodes_by_split(ctx)
    calib = [e["scores"] for e in splits["calib"] if e["success"]]
    counts = {
        name: {"episodes": len(eps), "successes": sum(bool(e["success"]) for e in eps)}
        for name, eps in splits.items()
    }
    if not calib:
        raise VlaexpError(
            f"No successful calibration rollout to calibrate alarms on ({counts}): conformal "
            "thresholds come from successful runs; score more episodes (rnd.score.n_episodes) "
            "or a better policy"
        )
    for name in ("val", "test"):
        outcomes = {bool(e["success"]) for e in splits[name]}
        if outcomes != {True, False}:
            raise VlaexpError(
                f"The {name} rollouts need both successes and failures to measure detection "
                f"({counts}); score more episodes (rnd.score.n_episodes)"
            )
    val = splits["val"]
    test = splits["test"]
    results: dict[str, Any] = {"score": d.score, "splits": counts, "kinds": {}}

    def report(kind: str, qs: list[float]) -> dict[str, Any]:
        """Window (and q among ``qs``) chosen on validation, calibrated, measured on test."""
        (window, q), table = select_window_and_q(
            calib,
            [e["scores"] for e in val],
            [bool(e["success"]) for e in val],
            list(d.windows),
            qs,
            kind,
            metric=d.metric,
        )
        thr = calibrate(kind, calib, window, q)
        test_scores = [e["scores"] for e in test]
        test_success = [bool(e["success"]) for e in test]
        metrics = detection_metrics(test_scores, test_success, thr)
        metrics["AUROC"] = episode_auroc(test_scores, test_success, window)
        subsets = {}
        for name, keep in (("in_distribution", False), ("perturbed", True)):
            part = [e for e in test if bool(e.get("ood")) == keep]
            if part:
                s_, ok_ = [e["scores"] for e in part], [bool(e["success"]) for e in part]
                subsets[name] = {
                    **detection_metrics(s_, ok_, thr),
                    "AUROC": episode_auroc(s_, ok_, window),
                }
        return {
            "window": window,
            "q": q,
            "threshold": thr.to_dict(),
            "test": metrics,
            "test_subsets": subsets,
            "selection": table,
            "alarms": [
                {
                    "episode_index": e["episode_index"],
                    "task_id": e["task_id"],
                    "success": bool(e["success"]),
                    "num_steps": e["num_steps"],
                    "alarm_step": first_alarm(e["scores"], thr),
                }
                for e in test
            ],
        }

    for kind in d.kinds:
        r = results["kinds"][kind] = report(kind, list(d.qs))
        if d.report_q is not None:
            fixed = report(kind, [float(d.report_q)])
            r["at_report_q"] = {
                k: fixed[k] for k in ("window", "q", "threshold", "test", "test_subsets")
            }
        ctx.log_metrics(
            {f"rnd/{kind}/{k}": float(v) for k, v in r["test"].items() if not k.startswith("n_")}
        )
    first = results["kinds"][d.kinds[0]]["test"]
    ctx.log_metrics({"rnd/auroc": float(first["AUROC"])})
    out = scores_dir(ctx)
    (out / DETECTION_FILE).write_text(json.dumps(results, indent=1, default=_json_float))
    (out / "detection.md").write_text(detection_markdown(results))
    log.info("Detection on %d test rollouts: %s", len(test), out / "detection.md")


def _json_float(x: Any) -> Any:
    return float(x)


def detection_markdown(results: dict[str, Any]) -> str:
    rows = [
        f"Score: `{results['score']}`; rollouts per split: {results['splits']}",
        "",
        "| threshold | window | q | TPR | TNR | accuracy | balanced acc. | detection time | TWA "
        "| AUROC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ("TPR", "TNR", "accuracy", "balanced_accuracy", "detection_time", "TWA", "AUROC")
    for kind, chosen in results["kinds"].items():
        # the q chosen on validation, then the fixed q a target is stated at
        for name, r in ((kind, chosen), (f"{kind} at fixed q", chosen.get("at_report_q"))):
            if r is None:
                continue
            for label, m in [("all test", r["test"]), *r.get("test_subsets", {}).items()]:
                cells = [f"{m[k]:.3f}" for k in keys]
                head = f"| {name} ({label}, n={m['n_episodes']}) | {r['window']} | {r['q']} | "
                rows.append(head + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------- visualize
def visualize_stage(ctx: RunContext) -> None:
    """Per scored episode with frames kept (up to ``rnd.visualize.n_episodes`` successes and
    as many failures): overlay and heatmap PNGs every ``every`` steps, the uncertainty
    timeline (threshold and alarm when ``rnd_detect`` ran) and an mp4 of the overlays; one
    success-vs-failure plot over all episodes. Logged to wandb when it is a logger."""
    import numpy as np

    from vlaexp.uncertainty import visualize as viz
    from vlaexp.uncertainty.detect import first_alarm, threshold_from_dict, windowed
    from vlaexp.uncertainty.monitor import load_episode_scores, maps, series

    cfg = ctx.cfg
    v = cfg.rnd.visualize
    root = scores_dir(ctx)
    files = require_scores(ctx)
    thr = None
    det_path = root / DETECTION_FILE
    if det_path.is_file():
        det = json.loads(det_path.read_text())
        kind = next(iter(det["kinds"]))
        thr = threshold_from_dict(det["kinds"][kind]["threshold"])
    out = root / "verification"
    images: dict[str, Path] = {}
    videos: dict[str, Path] = {}
    curves = []
    picked = {True: 0, False: 0}
    for path in files:
        data = load_episode_scores(path)
        meta = data["metadata"]
        overall = series(data)
        curves.append((overall if thr is None else windowed(overall, thr.window), meta["success"]))
        frames_path = path.with_name(path.name.replace("_uncertainty.pt", "_frames.npz"))
        ok = bool(meta["success"])
        if not frames_path.is_file() or picked[ok] >= v.n_episodes:
            continue
        picked[ok] += 1
        name = f"{path.parent.name}_episode_{meta['episode_index']:05d}"
        ep_dir = out / name
        cams = list(meta["cameras"])
        scores = {"overall": overall, **{c: series(data, c) for c in cams}}
        alarm = None
        if thr is not None:
            scores = {k: windowed(s, thr.window) for k, s in scores.items()}
            alarm = first_alarm(overall, thr)
        images[f"rnd/{name}/timeline"] = viz.plot_timeline(
            ep_dir / "uncertainty_timeline.png",
            scores,
            None if thr is None else thr.at(len(overall)),
            alarm,
            ok,
            f"{path.parent.name}, episode {meta['episode_index']}"
            + ("" if thr is None else f" (mean of {thr.window} steps)"),
        )
        with np.load(frames_path) as npz:
            frames = {c: npz[c] for c in cams}
        if meta.get("grid") is None:
            continue  # no maps kept: the timeline is all there is to draw
        ep_maps = {c: maps(data, c) for c in cams}
        vmin, vmax = viz.shared_range({c: m for c, m in ep_maps.items()})
        for t in range(0, len(overall), max(1, v.every)):
            paths = viz.save_step_images(
                ep_dir,
                t,
                {c: frames[c][t] for c in cams},
                {c: ep_maps[c][t] for c in cams},
                vmin,
                vmax,
            )
            if t == 0:
                images[f"rnd/{name}/overlay_step0"] = paths[0]
        if v.video:
            videos[f"rnd/{name}/overlay_video"] = viz.write_overlay_video(
                ep_dir / "overlay.mp4", frames, ep_maps, fps=10, vmin=vmin, vmax=vmax
            )
    if curves:
        images["rnd/success_vs_failure"] = viz.plot_success_vs_failure(
            out / "success_vs_failure.png",
            curves,
            None if thr is None or thr.kind != "constant" else thr.at(1)[0],
        )
    viz.log_to_wandb(ctx.wandb_run, images, videos)
    log.info("Uncertainty plots of %d episodes in %s", sum(picked.values()), out)
