"""Perturbation settings of the task suites, kept free of omegaconf so that the simulators
(the tabletop suites in particular) import with nothing but numpy and mujoco, e.g. on the GPU
machine, which has no Hydra stack."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PerturbationConfig:
    """Out-of-distribution changes and expert faults, all off by default.

    Scene perturbations change what the cameras see; expert faults make the scripted expert
    fail on purpose (for failure data used by RND and value functions).
    """

    object_colors: bool = False  # random RGB per object
    table_texture: bool = False  # random table colour / checker texture
    lighting: float = 0.0  # relative jitter of light intensity and direction, 0 = off
    camera_jitter: float = 0.0  # agentview pose noise: metres (position) and radians (angles)
    distractors: int = 0  # extra objects placed where they do not block the task
    # std of Gaussian noise added to the expert's actions, executed AND recorded (a faulty
    # expert: jittery demos); not data.collect.action_noise, which perturbs only what the env
    # executes and records the expert's clean corrections (DART)
    action_noise: float = 0.0
    # share of episodes whose expert gets action_noise (drawn from the episode's seed, apart
    # from the fault draw): below 1, one recording mixes clean demos with jittery ones
    action_noise_prob: float = 1.0
    early_release: bool = False  # expert opens the gripper while carrying
    wrong_target: bool = False  # expert manipulates another object / place than asked
    freeze: bool = False  # expert stops moving part-way through
    # Chance that an episode gets one of the enabled faults (one per episode, drawn from its
    # seed); below 1 a collected dataset mixes clean successes with tagged failures.
    fault_prob: float = 1.0
