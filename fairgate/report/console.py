"""How wide the terminal is and whether to colour it: one decision, shared by every command.

Width: ``COLUMNS`` when set to a positive number, else the size of the terminal when stdout
is one, else no limit. A pipe or a CI log (not a terminal, ``COLUMNS`` unset) gets every
row on one line, so ``grep`` finds a check with its status and values.

Colour, first rule that applies: ``--color``/``--no-color``; ``NO_COLOR`` (any non-empty
value) off; ``FORCE_COLOR`` (non-empty, not ``0``/``false``) on; ``TERM=dumb`` off;
``GITHUB_ACTIONS=true`` on (the Actions log renders ANSI colours); else on for a terminal.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TextIO

MIN_WIDTH = 40  # narrower than this, a layout cannot be read anyway: lines may exceed it


def _isatty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def width(stream: TextIO | None = None) -> int | None:
    """Columns the report may use; None: no limit (not a terminal and no ``COLUMNS``)."""
    raw = os.environ.get("COLUMNS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return max(int(raw), MIN_WIDTH)
    if _isatty(sys.stdout if stream is None else stream):
        return max(shutil.get_terminal_size().columns, MIN_WIDTH)
    return None


def color(flag: bool | None = None, stream: TextIO | None = None) -> bool:
    """Whether to colour (see the module doc for the order of the rules)."""
    if flag is not None:
        return flag
    env = os.environ
    if env.get("NO_COLOR"):
        return False
    force = env.get("FORCE_COLOR", "")
    if force:
        return force.strip().lower() not in ("0", "false", "no")
    if env.get("TERM") == "dumb":
        return False
    if env.get("GITHUB_ACTIONS") == "true":
        return True
    return _isatty(sys.stdout if stream is None else stream)


def interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal that can redraw a live bar."""
    return _isatty(sys.stderr if stream is None else stream) and os.environ.get("TERM") != "dumb"
