"""Input files must be regular files: a FIFO, a device or a socket never ends or never starts.

`/dev/zero` as a policy reads forever, a FIFO with no writer blocks the gate until CI kills
it, and a CSV reader's read-ahead on a device aborts at exit. Every input path (policy,
audit set, models) goes through :func:`require_regular_file` before anything opens it;
``os.stat`` does not open the file, so a FIFO cannot block the check itself.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fairgate.errors import FairgateError

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def require_regular_file(path: Path, error: type[FairgateError], *, where: str | None = None,
                         what: str = "file", expected: str = "a file") -> None:
    """Raise ``error`` unless ``path`` (after symlinks) is a regular file.

    Messages: ``<where>: <what> not found``, ``<where>: is a directory, expected
    <expected>``, ``<where>: not a regular file (a character device), expected <expected>``.
    ``where`` defaults to the path.
    """
    where = str(path) if where is None else where
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise error(f"{where}: {what} not found") from None
    except OSError as e:
        raise error(f"{where}: cannot read the {what}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{where}: is a directory, expected {expected}")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise error(f"{where}: not a regular file ({kind}), expected {expected}")


def read_regular_file(path: Path, limit: int, error: type[FairgateError], *,
                      where: str | None = None, what: str = "file",
                      expected: str = "a file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; never reads more than limit + 1.

    The file is opened non-blocking and checked again on the open descriptor, so a path
    swapped for a FIFO between the check and the open still cannot block.
    """
    require_regular_file(path, error, where=where, what=what, expected=expected)
    where = str(path) if where is None else where
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise error(f"{where}: not a regular file, expected {expected}")
            raw = f.read(limit + 1)
    except OSError as e:
        raise error(f"{where}: cannot read the {what}: {e.strerror or e}") from None
    if len(raw) > limit:
        raise error(f"{where}: larger than {_size(limit)}, the limit for a {what}")
    return raw


def _size(n: int) -> str:
    return f"{n // 1024:,} KiB" if n % 1024 == 0 else f"{n:,} bytes"
