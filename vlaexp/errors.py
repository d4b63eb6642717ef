"""Errors that tell the user which setting to change."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class VlaexpError(Exception):
    """Base class: a problem the user can fix from the command line or the config."""


class ConfigError(VlaexpError):
    """A config value, key or group option is wrong."""


class MissingPathError(VlaexpError, FileNotFoundError):
    """A path that a setting points to does not exist."""

    def __init__(self, what: str, path: str | Path, setting: str, hint: str = "") -> None:
        self.path = Path(path)
        self.setting = setting
        msg = f"{what} not found: '{path}' (set by `{setting}`)"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> ConfigError:
    """An error naming the bad value, the valid choices and the closest one."""
    choices = sorted(choices)
    return ConfigError(
        f"Unknown {kind} '{value}'.{did_you_mean(value, choices)} "
        f"Valid choices: {', '.join(choices)}"
    )
