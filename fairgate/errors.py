"""One exception hierarchy; the CLI maps each class to an exit code.

A CI system must tell a failed gate (exit 1) from a broken run (2, 3, 4), so every error
a user can cause is raised as one of these with a message a person can act on.
"""

from __future__ import annotations


class FairgateError(Exception):
    """Base of every error fairgate raises on purpose."""

    exit_code = 4


class UsageError(FairgateError):
    """Wrong command-line use: missing or conflicting options."""

    exit_code = 2


class PolicyError(FairgateError):
    """The policy file is missing, malformed or impossible."""

    exit_code = 2


class InputError(FairgateError):
    """The audit set, a model or inference is unusable."""

    exit_code = 3


class DataError(InputError):
    """The audit set is unreadable or has missing, wrong or undefined values."""


class ModelError(InputError):
    """An ONNX model cannot be loaded, fed or understood."""


class TrackingError(FairgateError):
    """MLflow logging failed where the policy requires it."""

    exit_code = 3


class InternalError(FairgateError):
    """A bug in fairgate: please report it."""

    exit_code = 4
