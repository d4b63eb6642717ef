"""Stage ``tokenizer_fit``: fit the RVQ action tokenizer on a dataset's action chunks and
analyse it on held-out chunks against the DCT baseline at matched bits.

Chunks are cut from the action column alone (no images are decoded), every start frame of
every episode, padded at an episode's end by repeating its last action as LeRobot does.
Episodes are split train/val/test with ``data.split`` and ``data.split_seed``, so the
overlapping chunks of one episode never straddle splits. Actions are quantile-normalized
(q01/q99 of the dataset's statistics to [-1, 1], clipped). Outputs in ``<run>/tokenizer/``:
``tokenizer.pt`` (settings, weights, statistics), ``analysis.{json,md}`` and
``mse_vs_bits.png``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from vlaexp.data.episodes import episode_ranges, split_episodes
from vlaexp.errors import ConfigError
from vlaexp.pipeline.context import RunContext
from vlaexp.tokenizers.rvq import RVQTokenizer
from vlaexp.training.schedules import warmup_cosine

log = logging.getLogger(__name__)

OUT_DIR = "tokenizer"


def action_chunks(actions: np.ndarray, ranges: list[range], chunk: int) -> np.ndarray:
    """float[N, chunk, A]: one chunk per frame of each episode range, the episode's last action
    repeated past its end."""
    out = []
    for r in ranges:
        ep = actions[r.start : r.stop]
        idx = np.minimum(np.arange(len(ep))[:, None] + np.arange(chunk)[None], len(ep) - 1)
        out.append(ep[idx])
    return np.concatenate(out) if out else np.zeros((0, chunk, actions.shape[1]), np.float32)


def split_chunks(
    actions: np.ndarray,
    ranges: dict[int, range],
    splits: dict[str, list[int]],
    chunk: int,
    q01: np.ndarray,
    q99: np.ndarray,
) -> dict[str, np.ndarray]:
    """Each split's action chunks (:func:`action_chunks` of its episodes), quantile-normalized."""
    return {
        name: quantile_normalize(action_chunks(actions, [ranges[e] for e in eps], chunk), q01, q99)
        for name, eps in splits.items()
    }


def quantile_normalize(x: np.ndarray, q01: np.ndarray, q99: np.ndarray) -> np.ndarray:
    return np.clip(2 * (x - q01) / np.maximum(q99 - q01, 1e-8) - 1, -1, 1).astype(np.float32)


class TokenizerModule(pl.LightningModule):
    """The RVQ tokenizer on the shared Trainer: batches are normalized chunks float[B, T, A]."""

    def __init__(
        self,
        settings: dict[str, Any],
        lr: float = 1e-3,
        lr_schedule: str = "constant",
        steps: int = 3000,
        input_noise: float = 0.0,
    ) -> None:
        super().__init__()
        if lr_schedule not in ("constant", "cosine"):
            raise ConfigError(
                f"tokenizer.lr_schedule must be constant or cosine, got {lr_schedule}"
            )
        if input_noise < 0:
            raise ConfigError(f"tokenizer.fit_input_noise must be >= 0, got {input_noise}")
        self.save_hyperparameters()
        self.tokenizer = RVQTokenizer(settings)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        chunks = batch[0]
        noise = self.hparams.input_noise
        # a denoising fit: the encoder reads the chunks with noise, the decoder must return
        # the clean ones, so chunks a policy predicts slightly off still get the same codes
        inputs = chunks + noise * torch.randn_like(chunks) if noise > 0 else None
        loss, parts = self.tokenizer(chunks, inputs=inputs)
        self.log("rvq/train_loss", loss, prog_bar=True)
        self.log("rvq/train_mse", parts["mse"])
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        chunks = batch[0]
        codes = self.tokenizer.encode(chunks)
        for k in range(1, self.tokenizer.settings.layers + 1):
            mse = torch.mean((self.tokenizer.decode(codes, n_layers=k) - chunks) ** 2)
            self.log(f"rvq/mse_l{k}", mse, prog_bar=k == self.tokenizer.settings.layers)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.tokenizer.parameters(), lr=self.hparams.lr)
        if self.hparams.lr_schedule == "constant":
            return opt
        # the project's schedule, without warmup, to zero over the fit
        cosine = warmup_cosine(opt, 0, self.hparams.steps, final_lr_ratio=0.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


def _dataset_actions(ctx: RunContext) -> tuple[np.ndarray, dict[int, range], dict[str, Any]]:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vlaexp.data.datamodule import open_metadata
    from vlaexp.data.episodes import with_frame_quantiles

    cfg = ctx.cfg
    if cfg.data.source == "collect":
        if "dataset" not in ctx.artifacts:
            raise ConfigError("tokenizer_fit reads the collected demos: add `collect` before it")
        meta = open_metadata(None, ctx.artifacts["dataset"])
    else:
        meta = open_metadata(cfg.data.repo_id, cfg.data.root)
    key = cfg.data.action_key
    ds = LeRobotDataset(meta.repo_id, root=meta.root, video_backend="pyav")
    actions = np.stack(ds.hf_dataset.with_format("numpy")[key]).astype(np.float32)
    ranges = episode_ranges(meta)
    # the dataset's own quantiles, not LeRobot's mean of per-episode ones (with_frame_quantiles)
    return actions, ranges, with_frame_quantiles(meta.stats[key], actions)


def fit_stage(ctx: RunContext) -> None:
    """Fit ``tokenizer=rvq`` on the run's dataset; analyse on the test episodes."""
    cfg = ctx.cfg
    tcfg = OmegaConf.to_container(cfg.tokenizer, resolve=True)
    if tcfg.get("type") != "rvq":
        raise ConfigError(f"tokenizer_fit fits tokenizer=rvq, got tokenizer={tcfg.get('type')}")
    from vlaexp.config.tokenizer import GROUP_ONLY

    lr = tcfg["lr"]
    settings = {k: v for k, v in tcfg.items() if k not in GROUP_ONLY}
    out = ctx.run_dir / OUT_DIR
    if cfg.resume and (out / "tokenizer.pt").is_file():
        # a resumed run keeps the tokenizer its policy's codes were trained on
        log.info("Resuming: reusing %s", out / "tokenizer.pt")
        ctx.artifacts["tokenizer"] = out / "tokenizer.pt"
        return
    actions, ranges, stats = _dataset_actions(ctx)
    if actions.shape[1] != settings["action_dim"]:
        raise ConfigError(
            f"tokenizer.action_dim={settings['action_dim']} but the dataset's actions have "
            f"{actions.shape[1]} dims"
        )
    splits = split_episodes(sorted(ranges), list(cfg.data.split), cfg.data.split_seed)
    q01, q99 = (np.asarray(stats[s], dtype=np.float32) for s in ("q01", "q99"))
    chunks = split_chunks(actions, ranges, splits, settings["chunk_size"], q01, q99)
    log.info("Action chunks: %s", {k: len(v) for k, v in chunks.items()})
    test_name = "test" if len(chunks["test"]) else "val"
    torch.manual_seed(int(cfg.seed))
    module = TokenizerModule(
        settings, lr, tcfg["lr_schedule"], tcfg["fit_steps"], tcfg["fit_input_noise"]
    )
    from vlaexp.training.trainer import build_trainer

    trainer = build_trainer(
        cfg,
        ctx.loggers,
        # its own schedule, not the policy's (a run may fit the tokenizer, then a policy)
        overrides={
            "gradient_clip_val": None,
            "precision": "32-true",
            "max_time": None,
            "max_steps": tcfg["fit_steps"],
            "max_epochs": None,
            "val_check_interval": None,
            "check_val_every_n_epoch": 5,
            "accumulate_grad_batches": 1,
        },
        policy=False,
    )

    def loader(name: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            TensorDataset(torch.from_numpy(chunks[name])),
            batch_size=tcfg["fit_batch_size"],
            shuffle=shuffle,
            drop_last=shuffle and len(chunks[name]) > tcfg["fit_batch_size"],
        )

    trainer.fit(module, loader("train", True), loader("val", False) if len(chunks["val"]) else None)
    tok = module.tokenizer.eval().cpu()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "settings": settings,
            "state_dict": tok.state_dict(),
            "stats": {"q01": torch.from_numpy(q01), "q99": torch.from_numpy(q99)},
        },
        out / "tokenizer.pt",
    )
    ctx.artifacts["tokenizer"] = out / "tokenizer.pt"
    analysis = analyse(tok, chunks["train"], chunks[test_name])
    analysis["splits"] = {
        k: {"episodes": len(splits[k]), "chunks": len(v)} for k, v in chunks.items()
    }
    analysis["evaluated_on"] = test_name
    (out / "analysis.json").write_text(json.dumps(analysis, indent=1))
    (out / "analysis.md").write_text(analysis_markdown(analysis))
    plot_mse_vs_bits(out / "mse_vs_bits.png", analysis)
    ctx.log_metrics({f"rvq/test_mse_l{r['layers']}": r["mse"] for r in analysis["rvq"]})
    log.info("Tokenizer analysis in %s", out / "analysis.md")


def analyse(tok: RVQTokenizer, fit: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """RVQ error per depth and code usage on ``test``; the DCT baseline at the same bits
    (its settings chosen on ``fit``)."""
    from vlaexp.tokenizers.analysis import code_usage, depth_errors
    from vlaexp.tokenizers.dct import dct_curve

    test_t = torch.from_numpy(test)
    rvq_rows = depth_errors(tok, test_t)
    usage = code_usage(tok.encode(test_t), tok.settings.codebook_size)
    budgets = [int(r["bits"]) for r in rvq_rows]
    dct_rows = dct_curve(fit, test, budgets)
    return {"rvq": rvq_rows, "code_usage": usage, "dct": dct_rows}


def analysis_markdown(a: dict[str, Any]) -> str:
    lines = [
        f"Held-out chunks: {a['splits'][a['evaluated_on']]['chunks']} ({a['evaluated_on']} split, "
        f"{a['splits'][a['evaluated_on']]['episodes']} episodes); actions normalized to [-1, 1].",
        "",
        "| layers | bits | RVQ MSE | RVQ MSE / variance | gripper sign acc. | DCT MSE (keep, bits/coef) |",
        "|---|---|---|---|---|---|",
    ]
    for r, d in zip(a["rvq"], a["dct"], strict=True):
        dct_cell = (
            f"{d['mse']:.5f} ({d['keep']}, {d['bits_per_coef']})"
            if np.isfinite(d["mse"])
            else "no setting fits"
        )
        lines.append(
            f"| {r['layers']} | {r['bits']:.0f} | {r['mse']:.5f} | {r['nmse']:.4f} | "
            f"{r.get('gripper_sign_acc', float('nan')):.3f} | {dct_cell} |"
        )
    lines += ["", "| layer | codes used | perplexity | dead codes |", "|---|---|---|---|"]
    for u in a["code_usage"]:
        lines.append(
            f"| {u['layer']} | {u['used']:.2f} | {u['perplexity']:.1f} | {u['dead_codes']} |"
        )
    return "\n".join(lines) + "\n"


def plot_mse_vs_bits(path: Path, a: dict[str, Any]) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([r["bits"] for r in a["rvq"]], [r["mse"] for r in a["rvq"]], "o-", label="RVQ")
    dct = [d for d in a["dct"] if np.isfinite(d["mse"])]
    ax.plot([d["bits"] for d in dct], [d["mse"] for d in dct], "s--", label="DCT (FAST-style)")
    ax.set_xlabel("bits per chunk")
    ax.set_ylabel("held-out MSE (normalized actions)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
