"""Progress of the pass over the audit set, on stderr: rows read, rows per second, elapsed,
and the time left when the row count is known (Parquet and ORC footers).

On a terminal: a live bar (tqdm), shown only once the pass has run ``delay`` seconds and
cleared when it ends, so a short run prints nothing. Elsewhere (a CI log, a pipe): one
plain line every ``interval`` seconds, the first after ``interval`` seconds, and a last
line with the totals if any was printed. ``--quiet`` turns it off. The text holds numbers
and the audit set's name through :func:`fairgate.report.safe.terminal`; it is written
through :mod:`fairgate.report.safe` like everything else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fairgate.report import console, safe

DELAY = 2.0  # seconds before a live bar appears
INTERVAL = 10.0  # seconds between plain lines


def duration(seconds: float) -> str:
    """``1:05`` or ``1:02:05``."""
    s = max(int(seconds), 0)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts rows as batches are read; call :meth:`close` when the pass ends."""

    def __init__(self, total: int | None, label: str, *, live: bool | None = None,
                 clock: Callable[[], float] | None = None, delay: float = DELAY,
                 interval: float = INTERVAL,
                 emit: Callable[[str], None] | None = None) -> None:
        self.total = total
        self.label = safe.terminal(label, 60)
        self.clock = clock or time.monotonic
        self.interval = interval
        self.emit = emit or (lambda line: safe.echo(line, err=True))
        self.start = self.last = self.clock()
        self.rows = 0
        self.printed = False
        self.bar: Any = None
        if console.interactive() if live is None else live:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"reading {self.label}", unit=" rows",
                            unit_scale=True, delay=delay, leave=False, mininterval=0.5,
                            dynamic_ncols=True, file=safe.ProgressStream())

    def line(self) -> str:
        elapsed = self.clock() - self.start
        rate = self.rows / elapsed if elapsed > 0 else 0.0
        text = f"fairgate: read {self.rows:,}"
        if self.total:
            text += f" of {self.total:,} rows ({self.rows / self.total:.0%})"
        else:
            text += " rows"
        text += f" from {self.label}, {rate:,.0f} rows/s, elapsed {duration(elapsed)}"
        if self.total and rate > 0 and self.rows < self.total:
            text += f", about {duration((self.total - self.rows) / rate)} left"
        return text

    def update(self, rows: int) -> None:
        self.rows += rows
        if self.bar is not None:
            self.bar.update(rows)
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.printed = True
            self.emit(self.line())

    def close(self, done: bool = True) -> None:
        """End the bar; in a log, a last line with the totals (``done``: the pass ended)."""
        if self.bar is not None:
            self.bar.close()
        elif self.printed and done:
            self.emit(self.line().replace("fairgate: read", "fairgate: done, read", 1))
