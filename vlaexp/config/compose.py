"""Compose vlaexp's config outside ``@hydra.main``: for tests, tools and input checks.

:func:`check_overrides` runs before Hydra takes over the command line, so a wrong group
option, a misspelt key or a wrong type ends with one clear message (valid choices, the
full key, a "did you mean") instead of a Hydra traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override
from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from vlaexp.config.store import register_configs
from vlaexp.errors import ConfigError, did_you_mean, unknown_choice

CONFIG_MODULE = "vlaexp.conf"
CONFIG_NAME = "config"
# Groups users choose options from (schema/ holds the structured configs behind them).
USER_GROUPS = (
    "experiment",
    "policy",
    "task_suite",
    "camera",
    "tokenizer",
    "data",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "debug",
    "hydra/launcher",
)


@contextmanager
def hydra_context() -> Iterator[GlobalHydra]:
    """Initialise Hydra on vlaexp's config module for the duration of the block."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        yield GlobalHydra.instance()


def normalize_overrides(overrides: Sequence[str]) -> list[str]:
    """Move a `debug` choice to the end as ``+debug=NAME``.

    Debug presets must win over the experiment's values (a smoke run of any experiment),
    but ``+experiment=NAME`` is appended to the end of the defaults list, after anything
    listed there. Appending the debug preset last keeps it last, whatever the order typed.
    """
    rest, debug = [], []
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and key.lstrip("+") == "debug":
            debug.append(f"+debug={value}")
        else:
            rest.append(o)
    return rest + debug


def compose_config(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The composed (unresolved) config for ``overrides``, as the entry point would see it."""
    with hydra_context():
        return compose(
            CONFIG_NAME,
            overrides=normalize_overrides(overrides),
            return_hydra_config=return_hydra_config,
        )


def group_options(group: str) -> list[str]:
    """The option names of a config group (``experiment``, ``policy``, ``hydra/launcher``)."""
    with hydra_context() as gh:
        return sorted(gh.config_loader().get_group_options(group))


def experiment_descriptions() -> dict[str, str]:
    """``{name: description}`` for every file in ``conf/experiment/``."""
    import importlib.resources

    root = importlib.resources.files(CONFIG_MODULE) / "experiment"
    out = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = yaml.safe_load(entry.read_text()) or {}
            out[Path(entry.name).stem] = str(data.get("description", ""))
    return out


def _values(override: Override) -> list[str] | None:
    """The option names an override selects, or None when they cannot be listed (globs)."""
    if override.is_delete():
        return []
    if override.is_sweep_override():
        if isinstance(override.value(), Glob):
            return None
        return list(override.sweep_string_iterator())
    value = override.value()
    return [] if value is None else [str(value)]


def _first_values(overrides: list[Override]) -> list[str]:
    """One concrete override list: each sweep replaced by its first value."""
    out = []
    for o in overrides:
        values = _values(o)
        if o.is_sweep_override():
            if not values:
                continue
            prefix = "+" if o.is_add() else "++" if o.is_force_add() else ""
            out.append(f"{prefix}{o.get_key_element()}={values[0]}")
        else:
            out.append(o.input_line)
    return out


def _explain_key_error(exc: BaseException, base_overrides: list[str]) -> ConfigError | None:
    """Turn OmegaConf's key/type errors into a message with the full key and a suggestion."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    full_key = getattr(cause, "full_key", None) or ""
    msg = getattr(cause, "msg", str(cause)).splitlines()[0]
    if isinstance(cause, ValidationError):
        return ConfigError(f"Wrong type for config key '{full_key}': {msg}")
    if isinstance(cause, ConfigKeyError | AttributeError) or "not in" in msg:
        parent_key, _, leaf = full_key.rpartition(".")
        try:
            base = compose_config(base_overrides)
            parent = OmegaConf.select(base, parent_key) if parent_key else base
        except HydraException:
            parent = None
        keys = [str(k) for k in parent] if isinstance(parent, DictConfig) else []
        prefix = f"{parent_key}." if parent_key else ""
        suggestion = did_you_mean(leaf, keys)
        if suggestion:
            suggestion = did_you_mean(prefix + leaf, [prefix + k for k in keys])
        elif isinstance(parent, DictConfig):
            # The key may exist one level deeper (policy.lr -> policy.optimizer.lr).
            nested = [
                f"{prefix}{k}.{leaf}"
                for k in keys
                if isinstance(parent[k], DictConfig) and leaf in parent[k]
            ]
            suggestion = f" Did you mean '{nested[0]}'?" if nested else ""
        where = f"under '{parent_key}'" if parent_key else "at the top level"
        valid = f" Valid keys {where}: {', '.join(keys)}" if keys else ""
        return ConfigError(f"Unknown config key '{full_key}'.{suggestion}{valid}")
    return None


def check_overrides(overrides: Sequence[str]) -> None:
    """Raise :class:`ConfigError` if ``overrides`` would not compose; the message says why."""
    try:
        parsed = OverridesParser.create().parse_overrides(normalize_overrides(overrides))
    except OverrideParseException as e:
        raise ConfigError(f"Cannot parse the command line: {e}") from None
    parsed = [o for o in parsed if not o.is_hydra_override()]
    with hydra_context() as gh:
        loader = gh.config_loader()
        group_overrides = []
        for o in parsed:
            group = o.key_or_group
            options = loader.get_group_options(group)
            if not options:
                continue
            group_overrides.append(o)
            for value in _values(o) or []:
                if value not in options:
                    raise unknown_choice(
                        "experiment" if group == "experiment" else f"{group} option", value, options
                    )
    concrete = _first_values(parsed)
    try:
        compose_config(concrete)
    except (ConfigCompositionException, OmegaConfBaseException, HydraException) as e:
        explained = _explain_key_error(e, _first_values(group_overrides))
        if explained is not None:
            raise explained from None
        raise ConfigError(str(e).strip()) from None


def resolved_run_config(
    overrides: Sequence[str], run_dir: str | Path, cwd: str | Path | None = None
) -> DictConfig:
    """The resolved config a run in ``run_dir`` would get (for tests, notebooks, tools).

    Sets Hydra's runtime values (``${hydra:runtime.output_dir}``, ``...cwd``) the way the
    entry point does, then resolves every interpolation once.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = compose_config(overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(run_dir)
    cfg.hydra.runtime.cwd = str(cwd or Path.cwd())
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg
