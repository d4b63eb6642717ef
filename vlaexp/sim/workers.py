"""Env workers for parallel evaluation: each builds its simulators inside its own process.

MuJoCo/OpenGL contexts do not survive ``fork``, so workers are started with ``spawn`` and
receive a picklable :class:`SuiteSpec` instead of a built suite. :class:`LocalWorker` runs
the same protocol in the calling process (one env, no IPC), for ``n_envs=1``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlaexp.sim.base import SimEnv, TaskSuite

NOISY_DIMS = 3  # translation only: rotation noise (0.5 rad a unit) stalls the yaw-tolerance moves


@dataclass
class SuiteSpec:
    """How to build a task suite in another process: its config node and cameras."""

    config: dict[str, Any]
    cameras: list[str]
    suite: TaskSuite | None = field(default=None, repr=False)  # set once built in-process

    def build(self) -> TaskSuite:
        if self.suite is None:
            from vlaexp.sim.factory import make_task_suite

            self.suite = make_task_suite(self.config, self.cameras)
        return self.suite


class _EnvSlot:
    """One env at a time (rebuilt when the task changes) plus its scripted expert."""

    def __init__(self, spec: SuiteSpec) -> None:
        self.suite = spec.build()
        self.env: SimEnv | None = None
        self.expert = None
        self.use_expert = False
        self.obs: dict[str, Any] | None = None
        self.expert_noise = 0.0
        self.noise_phases: frozenset[str] | None = None
        self.noise_rng: np.random.Generator | None = None

    def reset(
        self,
        task_id: int,
        seed: int,
        use_expert: bool,
        expert_noise: float = 0.0,
        noise_phases: list[str] | None = None,
    ) -> dict[str, Any]:
        if self.env is None or self.env.task_id != task_id:
            self.close()
            self.env = self.suite.make_env(task_id)
            self.expert = None
        self.use_expert = use_expert
        if use_expert and self.expert is None:
            self.expert = self.suite.make_expert(self.env)
        self.obs = self.env.reset(seed)
        if self.expert is not None:
            self.expert.reset()
        # DART (Laskey et al., 2017): the env executes the expert's action plus Gaussian noise
        # on the translation, while the episode records the expert's own action; the
        # closed-loop expert corrects the drift, so the demos show recoveries from states a
        # learned policy's small errors lead to. Seeded by the episode seed: same dataset.
        # ``noise_phases`` limits it to those phases of the expert (None: all of them).
        self.expert_noise = float(expert_noise) if use_expert else 0.0
        self.noise_phases = None if noise_phases is None else frozenset(noise_phases)
        self.noise_rng = np.random.default_rng([seed, 0xDA27]) if self.expert_noise else None
        return {
            "obs": self.obs,
            "instruction": self.env.instruction,
            "max_steps": self.env.max_steps,
        }

    def reseed_noise(self, stream: list[int] | None) -> None:
        """Draw the rest of the episode's DART noise from ``stream`` (a seed sequence) instead
        of the recording's, or none (None): the same state continued under other noise."""
        if self.expert_noise:
            self.noise_rng = None if stream is None else np.random.default_rng(stream)

    def step(self, action: np.ndarray | None) -> dict[str, Any]:
        assert self.env is not None and self.obs is not None
        executed, expert_acts = action, action is None
        if expert_acts:  # scripted expert acts from privileged state, here in the worker
            action = executed = self.expert.act(self.obs)
            noisy = self.noise_phases is None or self.expert.phase in self.noise_phases
            if self.noise_rng is not None and noisy:
                executed = np.array(action, dtype=np.float32)
                executed[:NOISY_DIMS] += self.noise_rng.normal(0.0, self.expert_noise, NOISY_DIMS)
        result = self.env.step(np.asarray(executed, dtype=np.float32))
        self.obs = result.obs
        return {
            "obs": result.obs,
            "reward": result.reward,
            "terminated": result.terminated,
            "truncated": result.truncated,
            "info": result.info,
            "action": np.asarray(action, dtype=np.float32),
            # what the scripted expert's action served (None when a policy acts)
            "phase": self.expert.phase if expert_acts else None,
        }

    def failure_mode(self) -> str:
        assert self.env is not None
        return self.env.failure_mode()

    def expert_info(self) -> dict[str, Any]:
        """What the scripted expert was given this episode, as the episode's row records it:
        ``expert_fault`` (suites with faults, else None), ``expert_fault_step`` (the step it took
        effect; None if it never did, or no fault) and ``expert_action_noise`` (the std of the
        noise its recorded actions got, ``perturbation.action_noise``: 0 for a clean episode of
        a mix; None for an expert that does not say): :meth:`Expert.info`, prefixed."""
        return {f"expert_{k}": v for k, v in self.expert.info().items()}

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def _worker_main(conn: Any, spec: SuiteSpec) -> None:
    slot = _EnvSlot(spec)
    try:
        while True:
            cmd, args = conn.recv()
            if cmd == "close":
                break
            try:
                conn.send(("ok", getattr(slot, cmd)(*args)))
            except Exception as e:  # report to the parent instead of dying silently
                import traceback

                conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        slot.close()
        conn.close()


class LocalWorker:
    """The worker protocol in this process."""

    def __init__(self, spec: SuiteSpec) -> None:
        self._slot = _EnvSlot(spec)

    def send(self, cmd: str, *args: Any) -> None:
        self._pending = getattr(self._slot, cmd)(*args)

    def recv(self) -> Any:
        return self._pending

    def close(self) -> None:
        self._slot.close()


class ProcessWorker:
    """The worker protocol in a spawned process."""

    def __init__(self, spec: SuiteSpec) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_worker_main, args=(child, SuiteSpec(spec.config, spec.cameras)), daemon=True
        )
        self._proc.start()
        child.close()

    def send(self, cmd: str, *args: Any) -> None:
        self._conn.send((cmd, args))

    def recv(self) -> Any:
        status, payload = self._conn.recv()
        if status == "error":
            raise RuntimeError(f"env worker failed: {payload}")
        return payload

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(("close", ()))
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
