"""One error family, so the CLI can print a single actionable line and exit 2."""

from __future__ import annotations


class RobustPTError(Exception):
    """Base of every error robust-pt raises on bad input; the message says what to do."""


class CheckpointError(RobustPTError):
    """A checkpoint is missing, corrupt, mismatched with its base, or would be overwritten."""


class ConfigError(RobustPTError):
    """A bad option value or a malformed preset / recipe file."""


class TaskError(RobustPTError):
    """An unknown task, a task the model cannot serve, or a malformed dataset."""


class AttackError(RobustPTError):
    """An unknown attack, an attack that does not fit the model, or bad attack parameters."""


class RunDirError(RobustPTError):
    """A run directory that holds a different run, or is unreadable."""


class LockedError(RunDirError):
    """A run, report or checkpoint directory that another robust-pt process is writing."""


class OutputPathError(RobustPTError):
    """An output path (run, report or checkpoint directory, baseline or JUnit file) that cannot be written."""
