"""Stage `value_eval`: the value function's metrics on the test split, as JSON."""

from __future__ import annotations

import json
import logging
from collections import defaultdict

import numpy as np
import torch

from vlaexp.data.datamodule import datamodule_from_config
from vlaexp.errors import ConfigError
from vlaexp.pipeline.context import RunContext
from vlaexp.value.metrics import value_metrics
from vlaexp.value.model import load_value_function

log = logging.getLogger(__name__)

METRICS_FILE = "value_eval.json"


def eval_stage(ctx: RunContext) -> None:
    """Load the value function trained by this run (or ``policy.path``), predict every frame
    of the test episodes and write :func:`value_metrics` to ``<run_dir>/value_eval.json``."""
    cfg = ctx.cfg
    path = ctx.artifacts.get("value_fn") or cfg.policy.get("path")
    if not path:
        raise ConfigError(
            "value_eval needs a trained value function: run the `train` stage with "
            "policy=value_fn first, or set policy.path"
        )
    model = load_value_function(path)
    if torch.cuda.is_available():
        model = model.cuda()
    datamodule = datamodule_from_config(cfg.data, cfg.policy, ctx.artifacts.get("dataset"))
    datamodule.setup("test")
    if "test" not in datamodule.datasets:
        raise ConfigError("value_eval: the test split is empty (data.split gives it no episodes)")
    logits: dict[int, list[torch.Tensor]] = defaultdict(list)
    values: dict[int, list[torch.Tensor]] = defaultdict(list)
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            out = model.logits(batch).float().cpu()
            for i, ep in enumerate(batch["episode_index"].tolist()):
                logits[ep].append(out[i])
                values[ep].append(batch["value"][i])
    episodes = sorted(logits)
    metrics = value_metrics(
        [torch.stack(logits[e]) for e in episodes],
        [torch.stack(values[e]).numpy().astype(np.float64) for e in episodes],
        [bool(datamodule.outcomes[e]["success"]) for e in episodes],
    )
    result = {"episodes": episodes, "frames": sum(len(v) for v in values.values()), **metrics}
    (ctx.run_dir / METRICS_FILE).write_text(json.dumps(result, indent=2))
    ctx.log_metrics({f"value_eval/{k}": v for k, v in metrics.items()})
    log.info("Value function on %d test episodes: %s", len(episodes), metrics)
