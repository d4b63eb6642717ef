"""vlaexp: Hydra-configured experiments for Vision-Language-Action robot policies."""

__version__ = "0.1.0"
