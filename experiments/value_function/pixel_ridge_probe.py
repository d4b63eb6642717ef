"""How visible is progress in the frames themselves? Ridge regression of the value labels on
4x-average-pooled pixels (agentview at 64 px -> 16 x 16 x 3 = 768 features, standardized),
fitted on the training episodes, scored on the test episodes with value_eval's split.

    python experiments/value_function/pixel_ridge_probe.py outputs/cache/datasets/<the run's dataset>

A diagnostic for experiments/value_function (not part of the framework): no model of ours.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from vlaexp.config.compose import compose_config
from vlaexp.data.datamodule import datamodule_from_config


def features(dm, split: str, cameras: list[str]):
    xs, ys, eps = [], [], []
    for batch in dm.split_dataloader(split):
        pooled = [
            torch.nn.functional.avg_pool2d(batch[f"observation.images.{c}"].float(), 4)
            for c in cameras
        ]
        xs.append(torch.cat([p.flatten(1) for p in pooled], 1).numpy())
        ys.append(batch["value"].numpy())
        eps.append(batch["episode_index"].numpy())
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(eps)


def main() -> None:
    root = Path(sys.argv[1])
    cfg = compose_config(["+experiment=value_tabletop", "data.num_workers=0"])
    cameras = ["agentview"]  # the experiment's camera
    dm = datamodule_from_config(cfg.data, cfg.policy, root)
    dm.setup("fit")
    dm.setup("test")
    x_tr, y_tr, _ = features(dm, "train", cameras)
    x_te, y_te, e_te = features(dm, "test", cameras)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    a, b = (x_tr - mu) / sd, (x_te - mu) / sd
    success = {int(e): bool(dm.outcomes[int(e)]["success"]) for e in np.unique(e_te)}
    print(f"train {a.shape}, test {b.shape}; test successes {sum(success.values())}/{len(success)}")
    print("| ridge alpha | train R^2 | test MAE | Spearman pooled | median per held-out success |")
    print("|---|---|---|---|---|")
    for alpha in (1, 10, 100, 1000):
        w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ (y_tr - y_tr.mean()))
        pred, fit = b @ w + y_tr.mean(), a @ w + y_tr.mean()
        r2 = 1 - ((fit - y_tr) ** 2).sum() / ((y_tr - y_tr.mean()) ** 2).sum()
        per = [
            spearmanr(pred[e_te == e], y_te[e_te == e]).statistic
            for e in np.unique(e_te)
            if success[int(e)]
        ]
        print(
            f"| {alpha} | {r2:.3f} | {np.abs(pred - y_te).mean():.3f} | "
            f"{spearmanr(pred, y_te).statistic:.3f} | {np.median(per):.3f} |"
        )


if __name__ == "__main__":
    main()
