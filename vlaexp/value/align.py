"""Stage 1 of the value function (``value_align``): align the projector on image-text pairs.

With SigLIP and Gemma frozen, only the MLP projector learns to turn image features into
tokens the language model can read: the loss is Gemma's next-token cross-entropy on the
answer (a caption) given the image tokens and a prompt, through Gemma's tied output
embedding. The projector is then written to ``<run>/value_align/projector.safetensors`` and
loaded by stage 2 (``policy.projector_path``, or the artifact of this run).

Pairs come from (``policy.align.source``):

- ``sim``: scenes of the run's task suite, rendered by every configured camera from seeds
  disjoint from the demonstrations and the evaluation seeds, captioned from the simulator's
  own state: each object's colour and noun, each fixture, where they lie on the table
  (left / right / centre, front / back), and the task text;
- ``hub``: a Hugging Face dataset (hub id or local directory) with an image column and text
  columns, e.g. a VQAv2 subset: the first text column is the prompt (the question), the last
  the target (the answer); the one image is fed as every camera's.

``value_align/align.json`` reports the held-out caption loss and token accuracy before and
after; ``value_align/captions.pt`` keeps the pairs for stage 2's optional co-training.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from vlaexp.data.transforms import hwc_uint8_to_chw_float, prepare_images
from vlaexp.errors import ConfigError, MissingPathError, VlaexpError
from vlaexp.pipeline.context import RunContext

log = logging.getLogger(__name__)

OUT_DIR = "value_align"
PROJECTOR_FILE = "projector.safetensors"
CAPTIONS_FILE = "captions.pt"
SCENE_PROMPT = "Describe the scene."
# seeds of the caption scenes: this far past a task's first demonstration seed, so they share
# no layout with demonstrations (which start at the offset 0) or evaluation episodes
CAPTION_SEED_OFFSET = 250_000


# ----- pairs -------------------------------------------------------------------------------
def _where(xy: np.ndarray) -> str:
    """Where a table point lies, in the agentview camera's terms (left is -x, back is +y)."""
    side = "on the left" if xy[0] < -0.08 else "on the right" if xy[0] > 0.08 else "in the middle"
    depth = "at the back" if xy[1] > 0.1 else "at the front" if xy[1] < -0.05 else ""
    return f"{side} {depth}".strip()


def describe_scene(env: Any) -> str:
    """A caption of a tabletop env's current scene from its state (see the module doc)."""
    parts = []
    for name in env.object_names:  # "<colour>_<noun>[_<tag>]"
        colour, noun = name.split("_")[:2]
        parts.append(f"a {colour} {noun} {_where(env.object_pos(name))}")
    for fixture in env.task.scene.fixtures:
        try:
            pos = env.body_pos(fixture)
        except (KeyError, ValueError):
            continue  # a fixture without a body of its name (e.g. drawn into another)
        parts.append(f"the {fixture} {_where(pos)}")
    return "; ".join(parts) + f". Task: {env.instruction}"


def scene_pairs(
    suite: Any, cameras: list[str], n_per_task: int, task_ids: list[int] | None = None
) -> list[dict[str, Any]]:
    """``n_per_task`` captioned scenes of each task (``task_ids``, default all) of a tabletop
    suite: ``{"images": uint8[C, H, W, 3], "prompt", "target"}``."""
    if not hasattr(suite, "make_env"):
        raise ConfigError("policy.align.source=sim needs a task suite with a simulator")
    pairs = []
    for task in suite.task_ids if task_ids is None else task_ids:
        env = suite.make_env(task)
        try:
            for seed in suite.train_seeds(task, n_per_task, offset=CAPTION_SEED_OFFSET):
                obs = env.reset(seed)
                missing = [c for c in cameras if c not in obs["images"]]
                if missing:
                    raise ConfigError(f"the suite renders {sorted(obs['images'])}, not {missing}")
                images = np.stack([obs["images"][c] for c in cameras])
                pairs.append(
                    {"images": images, "prompt": SCENE_PROMPT, "target": describe_scene(env)}
                )
        finally:
            if hasattr(env, "close"):
                env.close()
    return pairs


def hub_pairs(align: Any, n_cameras: int) -> list[dict[str, Any]]:
    """Pairs of a hub (or local) image-text dataset, ``align.limit`` rows at most."""
    import datasets

    source = str(align.repo_id or "")
    if not source:
        raise ConfigError(
            "policy.align.source=hub needs policy.align.repo_id (hub id or local dir)"
        )
    local = Path(source).expanduser()
    try:
        if local.exists():
            ds = datasets.load_dataset(str(local), split=align.split)
        else:
            ds = datasets.load_dataset(source, split=align.split)
    except Exception as e:
        raise VlaexpError(
            f"Could not load the alignment dataset '{source}' (policy.align.repo_id, split "
            f"'{align.split}'): {type(e).__name__}: {e}. Offline, download it elsewhere and "
            "give its local directory."
        ) from e
    columns = [align.image_column, *align.text_columns]
    absent = [c for c in columns if c not in ds.column_names]
    if absent:
        raise ConfigError(
            f"the alignment dataset has no column(s) {absent} (policy.align.image_column / "
            f"text_columns); its columns: {ds.column_names}"
        )
    pairs = []
    for row in ds.select(range(min(len(ds), align.limit))):
        image = np.asarray(row[align.image_column].convert("RGB"), dtype=np.uint8)
        texts = [str(row[c]) for c in align.text_columns]
        prompt = " ".join(texts[:-1]) if len(texts) > 1 else ""
        images = np.stack([image] * n_cameras)
        pairs.append({"images": images, "prompt": prompt, "target": texts[-1]})
    return pairs


class PairDataset(Dataset):
    """Pairs as value-function inputs: float[C, 3, S, S] images in [-1, 1] and the texts."""

    def __init__(self, pairs: list[dict[str, Any]], image_size: int) -> None:
        self.pairs, self.size = pairs, image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        p = self.pairs[i]
        images = torch.stack([hwc_uint8_to_chw_float(np.asarray(im)) for im in p["images"]])
        return {
            "images": prepare_images(images, self.size),
            "prompt": p["prompt"],
            "target": p["target"],
        }


# ----- the caption loss --------------------------------------------------------------------
def caption_tokens(
    tokenizer: Any, prompts: list[str], targets: list[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens long[B, L], attention mask bool[B, L], target mask bool[B, L]): the prompt
    (with the tokenizer's special tokens), then the target and EOS, right-padded to L."""
    eos = tokenizer.eos_token_id
    rows, targets_at = [], []
    for prompt, target in zip(prompts, targets, strict=True):
        head = tokenizer(prompt)["input_ids"] if prompt else tokenizer("")["input_ids"]
        tail = tokenizer(" " + target, add_special_tokens=False)["input_ids"]
        tail = tail + ([eos] if eos is not None else [])
        ids = (head + tail)[:max_length]
        rows.append(ids)
        targets_at.append(len(head))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    length = max(len(r) for r in rows)
    tokens = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    target = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (ids, start) in enumerate(zip(rows, targets_at, strict=True)):
        tokens[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = True
        target[i, start : len(ids)] = True
    return tokens, mask, target


def caption_loss(model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean next-token cross-entropy over the target tokens, their top-1 accuracy) of a
    value function's vision tower + projector + Gemma, through Gemma's tied embedding."""
    image_tokens = model.image_tokens(batch["images"])  # [B, C*N, H]
    tokens, mask, target = caption_tokens(
        model.tokenizer, list(batch["prompt"]), list(batch["target"]), model.config.align.max_length
    )
    hidden = model.lm_hidden(image_tokens, tokens, mask)
    tokens, target = tokens.to(model.device), target.to(model.device)
    n_image = image_tokens.shape[1]
    # position p predicts token p + 1: the hidden states before each target token
    pred = hidden[:, n_image - 1 : -1]  # [B, L, H]: for text token j, the state before it
    if target.sum() == 0:
        raise VlaexpError("no caption tokens left after truncation: raise policy.align.max_length")
    # tied output embedding, at the target positions only (Gemma's vocabulary is 262k)
    logits = pred[target].float() @ model.lm.embed_tokens.weight.float().T
    loss = F.cross_entropy(logits, tokens[target])
    accuracy = (logits.argmax(-1) == tokens[target]).float().mean()
    return loss, accuracy.detach()


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "images": torch.stack([i["images"] for i in items]),
        "prompt": [i["prompt"] for i in items],
        "target": [i["target"] for i in items],
    }


class AlignModule(pl.LightningModule):
    """Stage 1 on the shared Trainer: the value function with only its projector trainable."""

    def __init__(self, model: Any, lr: float) -> None:
        super().__init__()
        self.model, self.lr = model, lr
        model.requires_grad_(False)
        model.projector.requires_grad_(True)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, acc = caption_loss(self.model, batch)
        self.log("align/train_loss", loss, prog_bar=True, batch_size=len(batch["prompt"]))
        self.log("align/train_token_acc", acc, batch_size=len(batch["prompt"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, acc = caption_loss(self.model, batch)
        self.log("align/val_loss", loss, prog_bar=True, batch_size=len(batch["prompt"]))
        self.log("align/val_token_acc", acc, batch_size=len(batch["prompt"]))

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.model.projector.parameters(), lr=self.lr)


def _evaluate(model: Any, loader: DataLoader) -> dict[str, float]:
    model.eval()
    losses, accs, n = 0.0, 0.0, 0
    with torch.no_grad():
        for batch in loader:
            loss, acc = caption_loss(model, batch)
            k = len(batch["prompt"])
            losses, accs, n = losses + float(loss) * k, accs + float(acc) * k, n + k
    return {"caption_loss": losses / max(n, 1), "token_acc": accs / max(n, 1)}


def caption_batches(projector_path: Any, model: Any) -> Iterator[dict[str, Any]]:
    """Endless shuffled stage-1 batches for stage 2's co-training: the pairs value_align
    saved beside the projector (``captions.pt``)."""
    path = Path(str(projector_path or "")).expanduser()
    path = path.parent if path.suffix == ".safetensors" else path / OUT_DIR
    if not projector_path or not (path / CAPTIONS_FILE).is_file():
        raise ConfigError(
            "policy.cotrain_fraction > 0 needs stage 1's pairs: run value_align in this run, or "
            f"give policy.projector_path of a run that did (no {CAPTIONS_FILE} at {path})"
        )
    pairs = torch.load(path / CAPTIONS_FILE, weights_only=False)
    loader = DataLoader(
        PairDataset(pairs, model.config.image_size),
        batch_size=model.config.align.batch_size,
        shuffle=True,
        collate_fn=collate_pairs,
    )
    while True:
        yield from loader


# ----- the projector file ------------------------------------------------------------------
def projector_shape(config: Any) -> dict[str, int]:
    return {
        "vision_width": config.vision.width,
        "projector_hidden": config.projector_hidden,
        "lm_hidden_size": config.lm.hidden_size,
    }


def save_projector(model: Any, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PROJECTOR_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.projector.state_dict().items()}
    meta = {k: str(v) for k, v in projector_shape(model.config).items()}
    save_file(state, path, metadata=meta)
    return path


def load_projector(model: Any, source: str | Path) -> Path:
    """Stage 1's projector into ``model`` (a value function): a file or a run dir holding
    ``value_align/projector.safetensors``; one of other widths is an error naming them."""
    from safetensors import safe_open

    p = Path(source).expanduser()
    for candidate in (p, p / PROJECTOR_FILE, p / OUT_DIR / PROJECTOR_FILE):
        if candidate.is_file():
            path = candidate
            break
    else:
        raise MissingPathError(
            "Stage-1 projector",
            p,
            "policy.projector_path",
            hint=f"Run the value_align stage first; it writes {OUT_DIR}/{PROJECTOR_FILE}.",
        )
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    want = {k: str(v) for k, v in projector_shape(model.config).items()}
    have = {k: meta.get(k) for k in want}
    if have != want:
        raise ConfigError(
            f"The projector in {path} was aligned for {have}, this value function has {want} "
            "(policy.vision.width, policy.projector_hidden, policy.lm.hidden_size)"
        )
    model.projector.load_state_dict(load_file(path), strict=True)
    log.info("Stage-1 projector from %s", path)
    return path


# ----- the stage ---------------------------------------------------------------------------
def build_pairs(ctx: RunContext, model: Any) -> list[dict[str, Any]]:
    from omegaconf import OmegaConf

    from vlaexp.sim.factory import make_task_suite

    cfg, align = ctx.cfg, model.config.align
    if align.source == "sim":
        suite = make_task_suite(cfg.task_suite, list(model.config.cameras))
        tasks = cfg.data.collect.task_ids if cfg.data.source == "collect" else None
        return scene_pairs(
            suite,
            list(model.config.cameras),
            align.scenes_per_task,
            None if tasks is None else list(tasks),
        )
    if align.source == "hub":
        return hub_pairs(align, len(model.config.cameras))
    raise ConfigError(
        f"policy.align.source must be 'sim' or 'hub', got '{align.source}' "
        f"({OmegaConf.to_yaml(cfg.policy.align).strip()})"
    )


def align_stage(ctx: RunContext) -> None:
    """Train the projector of ``policy=value_fn`` on captioned pairs (module doc)."""
    from vlaexp.training.trainer import build_trainer
    from vlaexp.value.model import ValueFunction, to_value_config

    cfg = ctx.cfg
    if cfg.policy.type != "value_fn":
        raise ConfigError(f"value_align aligns policy=value_fn, got policy.type={cfg.policy.type}")
    torch.manual_seed(int(cfg.seed))
    config = to_value_config(cfg.policy)
    config.projector_path, config.require_projector = None, False  # stage 1 makes the projector
    model = ValueFunction(config)
    align = model.config.align
    pairs = build_pairs(ctx, model)
    if len(pairs) < 2:
        raise ConfigError(f"value_align needs at least 2 image-text pairs, got {len(pairs)}")
    rng = np.random.default_rng(int(cfg.seed))
    order = rng.permutation(len(pairs))
    n_val = max(1, math.ceil(align.val_fraction * len(pairs)))
    val = [pairs[i] for i in order[:n_val]]
    train = [pairs[i] for i in order[n_val:]] or val

    def loader(items: list[dict[str, Any]], shuffle: bool) -> DataLoader:
        return DataLoader(
            PairDataset(items, model.config.image_size),
            batch_size=align.batch_size,
            shuffle=shuffle,
            collate_fn=collate_pairs,
        )

    before = _evaluate(model, loader(val, False))
    module = AlignModule(model, align.lr)
    trainer = build_trainer(
        cfg,
        ctx.loggers,
        overrides={
            "max_steps": align.steps,
            "max_epochs": None,
            "max_time": None,
            "val_check_interval": None,
            "check_val_every_n_epoch": 1,
            "accumulate_grad_batches": 1,
            "gradient_clip_val": 1.0,
        },
        policy=False,
    )
    trainer.fit(module, loader(train, True), loader(val, False))
    after = _evaluate(model, loader(val, False))
    out = ctx.run_dir / OUT_DIR
    path = save_projector(model, out)
    torch.save(pairs, out / CAPTIONS_FILE)
    summary = {
        "source": align.source,
        "pairs": {"train": len(train), "val": len(val)},
        "steps": int(trainer.global_step),
        "val_before": before,
        "val_after": after,
        "example": {"prompt": pairs[0]["prompt"], "target": pairs[0]["target"]},
    }
    (out / "align.json").write_text(json.dumps(summary, indent=1))
    ctx.artifacts["projector"] = path
    ctx.log_metrics({f"align/val_{k}_after": v for k, v in after.items()})
    log.info(
        "value_align: held-out caption loss %.3f -> %.3f, token acc %.3f -> %.3f (%s)",
        before["caption_loss"],
        after["caption_loss"],
        before["token_acc"],
        after["token_acc"],
        path,
    )
