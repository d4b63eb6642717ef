"""The stages an experiment can run, by name.

Stages are referenced as ``module:function`` strings and imported on use, so listing or
validating them (``--help``, config checks) needs none of the heavy libraries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from vlaexp.errors import unknown_choice

if TYPE_CHECKING:
    from vlaexp.pipeline.context import RunContext

Stage = Callable[["RunContext"], None]

STAGES: dict[str, str] = {
    "collect": "vlaexp.pipeline.collect:collect_stage",
    "train": "vlaexp.pipeline.train:train_stage",
    "eval": "vlaexp.pipeline.evaluate:eval_stage",
    "report": "vlaexp.pipeline.report:report_stage",
    "tokenizer_fit": "vlaexp.tokenizers.stages:fit_stage",
    "rvq_compare": "vlaexp.tokenizers.compare:compare_stage",
    "rnd_collect": "vlaexp.uncertainty.stages:collect_stage",
    "rnd_train": "vlaexp.uncertainty.stages:train_stage",
    "rnd_score": "vlaexp.uncertainty.stages:score_stage",
    "rnd_score_dataset": "vlaexp.uncertainty.stages:score_dataset_stage",
    "rnd_detect": "vlaexp.uncertainty.stages:detect_stage",
    "rnd_visualize": "vlaexp.uncertainty.stages:visualize_stage",
    "value_align": "vlaexp.value.align:align_stage",
    "value_eval": "vlaexp.value.stages:eval_stage",
    "value_advantage": "vlaexp.value.stages:advantage_stage",
}

# Stages every rank of a data-parallel run takes part in; the others run on rank 0 only.
ALL_RANK_STAGES = frozenset({"collect", "train"})


def validate_stages(names: Sequence[str]) -> None:
    """Raise a ConfigError naming the first unknown stage and the valid ones."""
    for name in names:
        if name not in STAGES:
            raise unknown_choice("stage", name, STAGES)


def get_stage(name: str) -> Stage:
    validate_stages([name])
    module, _, func = STAGES[name].partition(":")
    return getattr(importlib.import_module(module), func)
