"""Text inputs of Pi0/Pi0.5: the tokenizer, the prompts and Pi0.5's discretized state.

Pi0's prompt is the task followed by a newline. Pi0.5's carries the state, normalized to
[-1, 1] and discretized into 256 bins (openpi's ``PaligemmaTokenizer``)::

    "Task: pick up the cube, State: 127 130 ... 128;\\nAction: "

Prompts are tokenized with right padding to ``tokenizer_max_length`` (longer ones are
truncated), as LeRobot's processors do.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaexp.errors import VlaexpError

STATE_BINS = 256
BUNDLED = "vlaexp.policies.pi0.tokenizers"  # package holding tokenizers shipped with vlaexp


def bundled_tokenizers() -> list[str]:
    root = importlib.resources.files(BUNDLED)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


def load_tokenizer(name_or_path: str | Path, local_dir: Path | None = None) -> Any:
    """A transformers tokenizer: ``local_dir`` when it holds one (a checkpoint's copy),
    else a tokenizer bundled with vlaexp by name, else a hub id or a local directory."""
    from transformers import AutoTokenizer

    if local_dir is not None and (Path(local_dir) / "tokenizer_config.json").is_file():
        return _tokenizer_from_dir(Path(local_dir))
    name = str(name_or_path)
    if name in bundled_tokenizers():
        with importlib.resources.as_file(importlib.resources.files(BUNDLED) / name) as path:
            return _tokenizer_from_dir(Path(path))
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise VlaexpError(
            f"Could not load the tokenizer '{name}' (policy.tokenizer): {e}. Offline, download it "
            f"elsewhere and point policy.tokenizer at its directory, or use a bundled one: "
            f"{', '.join(bundled_tokenizers())}"
        ) from e


def _tokenizer_from_dir(path: Path) -> Any:
    """A saved fast tokenizer, whichever transformers major version wrote it.

    transformers 5 saves ``tokenizer_class: TokenizersBackend``, a class 4.x does not have
    (checkpoints trained on the GPU machine load on a CPU with 4.57): there the same
    ``tokenizer.json`` is read through ``PreTrainedTokenizerFast`` with the saved special
    tokens, which is what AutoTokenizer would build from it."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except ValueError as e:
        if "TokenizersBackend" not in str(e) or not (path / "tokenizer.json").is_file():
            raise
    config = json.loads((path / "tokenizer_config.json").read_text())
    special = {k: config[k] for k in SPECIAL_TOKEN_KEYS if isinstance(config.get(k), str)}
    return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), **special)


SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


def discretize_state(state: np.ndarray) -> np.ndarray:
    """Bin index in 0..255 of each value of a state normalized to [-1, 1] (float[B, D]).

    openpi's rule, ``digitize(x, linspace(-1, 1, 257)[:-1]) - 1``: values below -1 give -1
    and values at or above 1 give 255, exactly as the published Pi0.5 models saw them.
    """
    return np.digitize(state, bins=np.linspace(-1, 1, STATE_BINS + 1)[:-1]) - 1


def pi0_prompt(task: str, advantage: str | None = None) -> str:
    """Pi0's prompt (and Pi0.5's without state input): the task and a newline. ``advantage``
    adds RECAP's indicator line after it, as :func:`pi05_prompt` does before "Action: "."""
    text = task if task.endswith("\n") else f"{task}\n"
    return text + advantage_line(advantage)


def advantage_line(advantage: str | None) -> str:
    return f"Advantage: {advantage};\n" if advantage else ""


def pi05_prompt(task: str, discrete_state: np.ndarray, advantage: str | None = None) -> str:
    """``advantage`` ("positive" / "negative", advantage conditioning) adds
    ``"Advantage: <it>;\n"`` before ``"Action: "``; None leaves the published prompt."""
    clean = task.strip().replace("_", " ").replace("\n", " ")
    state = " ".join(str(int(v)) for v in discrete_state)
    return f"Task: {clean}, State: {state};\n{advantage_line(advantage)}Action: "


def tokenize(
    tokenizer: Any, prompts: list[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens long[B, max_length], mask bool[B, max_length]), right-padded and truncated."""
    enc = tokenizer(
        prompts,
        max_length=max_length,
        padding="max_length",
        truncation=True,
        padding_side="right",
        return_tensors="pt",
    )
    return enc["input_ids"].long(), enc["attention_mask"].bool()
