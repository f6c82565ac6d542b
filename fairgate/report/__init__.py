"""Reporters: one protocol, one module each. Each renders a :class:`GateReport` to text.

Every value that comes from the data, a model or the policy reaches a report through the
function of :mod:`fairgate.report.safe` for that report's format.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fairgate.errors import UsageError

if TYPE_CHECKING:  # report.safe is used by the policy loader, which core.outcome imports
    from fairgate.core.outcome import GateReport


class Reporter(Protocol):
    """Renders a gate report; ``filename`` is where it goes inside ``--out``."""

    name: str
    filename: str

    def render(self, report: GateReport) -> str: ...


def prepare_out_dir(path: Path) -> None:
    """Check that fairgate can make ``path`` and write in it, or raise UsageError (exit 2).

    Called before any work: otherwise a gate whose reports cannot be written runs to the
    end, then crashes and its verdict is lost. Permission bits do not tell (root, ACLs,
    read-only mounts), so this makes the folders and a file; folders it made are removed
    again, so a run that fails later leaves nothing behind.
    """
    where = f"--out {path}"
    if path.exists() and not path.is_dir():
        raise UsageError(f"{where}: exists and is not a directory; give a directory for the "
                         "reports")
    chain = (path, *path.parents)
    missing = list(itertools.takewhile(lambda p: not p.exists(), chain))
    if len(missing) < len(chain) and not chain[len(missing)].is_dir():
        raise UsageError(f"{where}: {chain[len(missing)]} is not a directory, so no directory "
                         "can be made under it")
    try:
        _probe(path, where)
    finally:
        for made in missing:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()


def _probe(path: Path, where: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{where}: cannot create the directory ({e.strerror or e})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".fairgate-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{where}: cannot write in the directory ({e.strerror or e})") from None


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are CI artifacts others read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reporters() -> dict[str, Reporter]:
    """Every file reporter, by format name."""
    from fairgate.report.html import HtmlReporter
    from fairgate.report.json import JsonReporter
    from fairgate.report.junit import JunitReporter
    from fairgate.report.markdown import MarkdownReporter

    found: list[Reporter] = [JsonReporter(), MarkdownReporter(), JunitReporter(), HtmlReporter()]
    return {r.name: r for r in found}


def write_reports(report: GateReport, out: Path, formats: tuple[str, ...] = ()) -> list[Path]:
    """Write the chosen formats (all when empty; report.json always) into ``out``."""
    chosen = reporters()
    names = [n for n in chosen if not formats or n in formats or n == "json"]
    written = []
    for name in names:
        r = chosen[name]
        path = out / r.filename
        write_atomic(path, r.render(report))
        written.append(path)
    for name, r in chosen.items():  # a report of an earlier run must not pass for this one's
        if name not in names:
            (out / r.filename).unlink(missing_ok=True)
    return written
