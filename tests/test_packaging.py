"""The wheel carries conf/, so `python -m vlaexp` works from an install outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_configs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "conf", src / "conf")
    shutil.copytree(
        REPO / "vlaexp", src / "vlaexp", symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import build_meta as b; print(b.build_wheel('dist'))",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = src / "dist" / build.stdout.strip().splitlines()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    yamls = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "conf").rglob("*.yaml"))
    for y in yamls:
        assert f"vlaexp/{y}" in names, f"{y} missing from the wheel"

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", "import vlaexp, sys; print(vlaexp.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip().startswith(str(site)), out.stdout + out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "vlaexp", "--help"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "quickstart" in out.stdout, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "vlaexp", "+experiment=quickstart", "--cfg", "job"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "name: quickstart" in out.stdout, out.stderr
