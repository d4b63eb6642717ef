"""Content-addressed artifacts: an expensive output is built once per distinct input.

``cached_artifact(cache_dir, kind, spec, build)`` keys the output by a hash of ``spec``
(everything that determines it). It is built in a temporary directory and renamed into
place with a completion marker, under a file lock, so concurrent jobs (sweeps, ranks) build
it once and a crash never leaves a half-written artifact that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

log = logging.getLogger(__name__)

COMPLETE = ".complete"
SPEC_FILE = "artifact_spec.json"


def spec_hash(spec: dict[str, Any]) -> str:
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_artifact(
    cache_dir: str | Path,
    kind: str,
    spec: dict[str, Any],
    build: Callable[[Path], Any],
    label: str = "",
) -> Path:
    """The artifact directory for ``spec``; ``build(tmp_dir)`` runs only if it is not there."""
    key = f"{label}-{spec_hash(spec)}" if label else spec_hash(spec)
    final = Path(cache_dir) / kind / key
    if (final / COMPLETE).exists():
        log.info("Reusing cached %s %s", kind, final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / COMPLETE).exists():  # another job built it while this one waited
            log.info("Reusing cached %s %s", kind, final)
            return final
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        # Builders that create their own directory (LeRobotDataset.create) need it absent.
        result = build(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / SPEC_FILE).write_text(
            json.dumps({"spec": spec, "result": result}, indent=2, default=str)
        )
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        (final / COMPLETE).touch()
    log.info("Built %s %s", kind, final)
    return final
