"""Vision-token stores for RND training: sharded float16 arrays, memory-mapped at train time.

Full-size Pi0.5 tokens are 2048 wide and a task type's demonstrations give ~1M sampled tokens
per camera (4 GB in float16), so they are written shard by shard (``.npy``, readable with
``numpy.load(mmap_mode="r")``) and never held in RAM. ``index.json`` is written after the
last shard: a store without it is incomplete (an interrupted collection) and is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vlaexp.errors import VlaexpError

INDEX = "index.json"


def sample_tokens(tokens: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` of one frame's tokens float[N, d], drawn without replacement (seeded)."""
    n = tokens.shape[0]
    if not 0 < k <= n:
        raise ValueError(f"cannot sample {k} of {n} tokens")
    return tokens[torch.randperm(n, generator=generator)[:k].to(tokens.device)]


class TokenStoreWriter:
    """Appends float[n, d] token batches to ``root`` in shards of ``shard_size`` rows."""

    def __init__(self, root: str | Path, dim: int, shard_size: int = 65536) -> None:
        self.root = Path(root)
        if (self.root / INDEX).exists():
            raise VlaexpError(f"token store {self.root} exists already; remove it to rewrite it")
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim, self.shard_size = dim, shard_size
        self.shards: list[dict] = []
        self._buf: list[np.ndarray] = []
        self._buffered = 0

    def append(self, tokens: torch.Tensor | np.ndarray) -> None:
        arr = np.asarray(tokens.detach().cpu() if torch.is_tensor(tokens) else tokens)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"expected tokens [n, {self.dim}], got {list(arr.shape)}")
        self._buf.append(arr.astype(np.float16))
        self._buffered += len(arr)
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int) -> None:
        data = np.concatenate(self._buf) if len(self._buf) > 1 else self._buf[0]
        name = f"shard_{len(self.shards):05d}.npy"
        np.save(self.root / name, data[:n])
        self.shards.append({"file": name, "n": int(n)})
        rest = data[n:]
        self._buf, self._buffered = ([rest] if len(rest) else []), len(rest)

    def close(self) -> Path:
        """Write the last shard and the index; returns the store's root."""
        if self._buffered:
            self._flush(self._buffered)
        index = {"dim": self.dim, "dtype": "float16", "shards": self.shards}
        (self.root / INDEX).write_text(json.dumps(index, indent=1))
        return self.root


class TokenStore(Dataset):
    """A finished store as a dataset of float32[d] tokens, its shards memory-mapped."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index_path = self.root / INDEX
        if not index_path.is_file():
            raise VlaexpError(
                f"{self.root} is not a finished token store (no {INDEX}: collection was "
                "interrupted or never ran); collect the tokens again"
            )
        index = json.loads(index_path.read_text())
        self.dim = int(index["dim"])
        self.shards = [np.load(self.root / s["file"], mmap_mode="r") for s in index["shards"]]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return torch.from_numpy(np.array(self.shards[s][i - self.offsets[s]], dtype=np.float32))

    def gather(self, indices: list[int]) -> torch.Tensor:
        """A whole batch float32[len(indices), d] in one read per shard (training reads
        batches through this, see ``vlaexp.uncertainty.train``; not ``__getitems__``, so that
        a plain ``Subset`` with the default collate still works per token)."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"token index out of range 0..{len(self) - 1}")
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        for s in np.unique(shard):
            rows = shard == s
            local = idx[rows] - self.offsets[s]
            order = np.argsort(local)  # memmaps read sorted rows fastest
            got = np.empty((len(local), self.dim), dtype=np.float32)
            got[order] = self.shards[s][local[order]]
            out[rows] = got
        return torch.from_numpy(out)

    def split(self, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
        """(train, held-out) token indices, a seeded shuffle (held-out at least one token)."""
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        n_val = max(1, round(len(self) * val_fraction))
        return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
