"""fairgate: a fairness release gate for compressed models (teacher vs student).

The Python API (``check``, ``compare``, ``load_policy``; see :mod:`fairgate.api`) is imported
on first use, so that ``import fairgate`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "check", "compare", "load_policy"]

if TYPE_CHECKING:
    from fairgate.api import check, compare, load_policy


def __getattr__(name: str) -> Any:
    if name in ("check", "compare", "load_policy"):
        from fairgate import api

        return getattr(api, name)
    raise AttributeError(f"module 'fairgate' has no attribute {name!r}")
