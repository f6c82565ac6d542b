"""The policy: strict YAML (loader.py) validated into frozen, typed values (spec.py)."""

from fairgate.policy.loader import parse_yaml
from fairgate.policy.spec import (
    BOUNDS,
    Bound,
    Check,
    LoadedPolicy,
    ModelSpec,
    Policy,
    Waiver,
    json_schema,
    load_policy,
    validate,
)

__all__ = ["BOUNDS", "Bound", "Check", "LoadedPolicy", "ModelSpec", "Policy", "Waiver",
           "json_schema", "load_policy", "parse_yaml", "validate"]
