"""Untrusted text made safe for each place it goes: one function per sink.

Group values, column names, class names, check ids, ONNX output names, file paths, waiver
owners and reasons, and every message that embeds them come from data, models or
policies. Each function below takes such text and returns it inert for one sink: it cannot
become a CI command, markup, a spreadsheet formula or an invalid key there, and a huge
value is clipped with a visible marker. Control characters are shown escaped (``\\n``,
``\\x1b``, ``\\u2028``) rather than dropped, so a person sees what the data holds.

Everything fairgate writes to stdout or stderr goes through :func:`echo`, whose
:func:`guard_lines` is the last line of defence for the CI log. fairgate's own GitHub
workflow commands take the one other, explicit path: :func:`workflow_command` builds them
with their fields escaped and :func:`emit_workflow_command` writes them.
"""

from __future__ import annotations

import contextlib
import html as _html
import os
import re
import sys
import unicodedata
from collections.abc import Callable
from typing import NewType

import click

TEXT_CHARS = 1000  # default clip of one value, in characters of the original
LINE_CHARS = 10_000  # no line fairgate prints is longer (backstop for messages)

# C0 (TAB, LF, CR, ESC, NUL ...), DEL, C1 (incl. NEL U+0085), line/paragraph separators,
# bidi controls (they reorder what a reader sees), invisible characters that would make two
# labels look alike (soft hyphen, zero-width space, word joiner, BOM), lone surrogates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e"
                      "\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# Unicode's default-ignorable code points: .NET's culture-aware IndexOf/StartsWith (which
# the runner uses) skip them, so ``#\u200d#[`` may read as ``##[``.
_IGN = ("[\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
        "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
        "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")
# Whitespace .NET's String.TrimStart removes (Char.IsWhiteSpace): before a v2 ``::`` command.
_DOTNET_SPACE = ("\t\n\v\f\r\x85 \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                 "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# Commands honoured anywhere on a line: GitHub's v1 ``##[`` and Azure's ``##vso[``; and the
# ``::`` that starts a v2 command after leading whitespace.
_ANYWHERE = re.compile(f"#({_IGN}*)#(?={_IGN}*(?:\\[|v{_IGN}*s{_IGN}*o{_IGN}*\\[))", re.IGNORECASE)
_V2_START = re.compile(f"^((?:[{_DOTNET_SPACE}]|{_IGN})*):(?={_IGN}*:)")
# Characters XML 1.0 cannot carry at all, even as references; C1 and DEL are discouraged;
# a CR in text is read back as LF (end-of-line handling).
_NOT_XML = re.compile("[^\t\n\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Markdown metacharacters; ``_`` between two letters or digits cannot emphasise (CommonMark's
# flanking rules), so ``age_group`` stays readable; ``://`` and ``www.`` would be autolinked.
_MD_SPECIAL = re.compile(r"[\\`*\[\]|~#!$<>]|(?<![^\W_])_|_(?![^\W_])|:(?=//)|(?<=www)\.",
                         re.IGNORECASE)
# At the start of a value: what would open a list item (``- x``, ``1. x``) or a heading.
_MD_BLOCK_START = re.compile(r"^(\s*(?:\d{1,9}(?=[.)]))?)([-+=.)])(?=\s|$|=)")
# A colour as click.style writes it, or one control character (see guard_lines).
_SGR_OR_CONTROL = re.compile(r"\x1b\[[0-9;]*m|" + _CONTROL.pattern)


def _escape_char(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def visible(text: object) -> str:
    """Control characters shown as escapes: no raw line break, ESC or NUL reaches a sink."""
    return _CONTROL.sub(lambda m: _escape_char(m.group()), str(text))


def clip(text: object, limit: int | None = TEXT_CHARS, *, short: bool = False) -> str:
    """At most ``limit`` characters of the value, then a marker saying how much was cut
    (``short``: a bare ``…`` where space is tight and the whole value is shown elsewhere)."""
    s = str(text)
    if limit is None or len(s) <= limit:
        return s
    if short:
        return s[: max(limit - 1, 0)] + "…"
    return f"{s[:limit]}… ({len(s) - limit:,} more characters)"


def _neutralise_commands(line: str) -> str:
    """No GitHub/Azure command: ``##[`` → ``#\\x23[`` anywhere, a leading ``::`` → ``\\x3a:``."""
    return _V2_START.sub(r"\1\\x3a", _ANYWHERE.sub(r"#\1\\x23", line))


def terminal(text: object, limit: int | None = 200) -> str:
    """For the terminal and the CI log, which the Actions runner parses line by line.

    Control characters are escaped (so no CR or LF starts a new line, no ESC moves the
    cursor), a leading ``::`` and any ``##[`` are neutralised, long values are clipped.
    """
    return _neutralise_commands(visible(clip(text, limit)))


def guard_lines(text: str, *, styled: bool = False) -> str:
    """The output boundary: every line of ``text`` made safe to print in a CI log.

    Raw CR and other control characters are escaped (TAB and the LF between lines stay),
    no line can be parsed as a workflow command, over-long lines are clipped. ``styled``
    keeps the colour codes fairgate itself adds (click.style); any other ESC is escaped.
    """
    def control(m: re.Match[str]) -> str:
        c = m.group()
        return c if c == "\t" or (styled and c.startswith("\x1b[")) else _escape_char(c[0]) + c[1:]

    return "\n".join(_neutralise_commands(_SGR_OR_CONTROL.sub(control, clip(line, LINE_CHARS)))
                     for line in text.split("\n"))


def echo(text: object = "", *, err: bool = False, nl: bool = True, color: bool | None = None,
         styled: bool = False) -> None:
    """The one way fairgate writes to stdout/stderr: through :func:`guard_lines`."""
    _write(lambda: click.echo(guard_lines(str(text), styled=styled), err=err, nl=nl,
                              color=color), err)


class ProgressStream:
    """The file a live progress bar (tqdm, :mod:`fairgate.report.progress`) writes to: stderr
    through :func:`guard_lines`, keeping only the CR that redraws the bar's line."""

    def write(self, text: str) -> int:
        guarded = "\r".join(guard_lines(part) for part in text.split("\r"))
        _write(lambda: (sys.stderr.write(guarded), sys.stderr.flush()), err=True)
        return len(text)

    def flush(self) -> None:
        _write(sys.stderr.flush, err=True)

    def fileno(self) -> int:  # tqdm's dynamic width asks the terminal through it
        return sys.stderr.fileno()

    def isatty(self) -> bool:
        return sys.stderr.isatty()

    @property
    def encoding(self) -> str:  # tqdm draws a smooth bar when the stream takes UTF-8
        return getattr(sys.stderr, "encoding", None) or "ascii"


def _write(write: Callable[[], object], err: bool = False) -> None:
    """Run ``write``; a reader that went away (``fairgate check | head``) ends the output,
    not the gate: the stream is pointed at /dev/null, and the reports, the MLflow run and
    the exit code are the verdict's as usual."""
    try:
        write()
    except BrokenPipeError:
        stream = sys.stderr if err else sys.stdout
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def markdown(text: object, limit: int | None = TEXT_CHARS) -> str:
    """Inert GitHub-flavoured Markdown, for table cells and running text.

    HTML is escaped, every Markdown metacharacter (including ``|``, which ends a table
    cell, and ``$``, GitHub's math) is backslash-escaped, a leading ``-``/``+``/``=`` or
    ``1.`` cannot start a list or heading, control characters are shown escaped (so no
    line break ends the cell and no NUL or ESC reaches the file), ``@`` can neither mention
    a GitHub user nor start an e-mail link, long values are clipped.
    """
    out = _MD_SPECIAL.sub(r"\\\g<0>", _html.escape(visible(clip(text, limit)), quote=False))
    # a backslash does not stop GitHub's @mentions (which notify people) or cmark-gfm's
    # e-mail autolinks, both found in rendered text: a zero-width space after ``@`` does
    # (as Dependabot writes ``@&#8203;user``)
    return _MD_BLOCK_START.sub(r"\1\\\2", out).replace("@", "@&#8203;")


def markdown_code(text: object, limit: int | None = 200) -> str:
    """A path or name as inline code, or as escaped text when code cannot hold it.

    Not for table cells: a ``|`` there ends the cell even inside code.
    """
    shown = visible(clip(text, limit))
    return f"`{shown}`" if shown and "`" not in shown and "|" not in shown else markdown(shown, None)


def html(text: object, limit: int | None = TEXT_CHARS, *, short: bool = False) -> str:
    """For HTML text and attribute values (``data-*``, ``<title>``): escaped with quotes,
    control characters shown escaped (NUL and most C0 are parse errors), clipped so a
    huge value cannot make a huge page."""
    return _html.escape(visible(clip(text, limit, short=short)), quote=True)


def xml(text: object, limit: int | None = 4000) -> str:
    """For XML text and attributes built with ElementTree (which escapes ``<&"``): the
    characters XML 1.0 cannot carry (NUL, ESC, other C0 but TAB and LF, U+FFFE/U+FFFF,
    surrogates), CR (a parser reads it as LF) and the discouraged DEL and C1 are shown
    escaped; clipped."""
    return _NOT_XML.sub(lambda m: _escape_char(m.group()), clip(text, limit))


def csv_cell(text: object) -> str:
    """A CSV text cell that stays one cell and that a spreadsheet will not run as a formula.

    Control characters are shown escaped (the csv module leaves a CR unquoted with a ``\\n``
    line end, and readers end the row there); a cell that starts with ``= + - @``, also
    after whitespace, gets a leading ``'`` (a TAB or CR before it defeated the old check).
    """
    s = visible(text)
    return "'" + s if s.lstrip()[:1] in ("=", "+", "-", "@") else s


# ----------------------------------------------------------------------------- MLflow

_KEY_WORDS = ((">=", "ge"), ("<=", "le"), ("!=", "ne"), ("==", "eq"), (">", "gt"), ("<", "lt"),
              ("=", "eq"), ("+", "plus"), ("%", "pct"), ("&", "and"))
_NOT_IN_KEY = re.compile(r"[^\w.\-]+")  # MLflow allows \w . - space / (and : off Windows)


def mlflow_key_part(raw: str) -> str:
    """One readable MLflow key segment: ``>50K`` → ``gt_50K``, ``age = 40+`` → ``age_eq_40_plus``.

    Operators become words so ``>50K`` and ``<=50K`` stay apart; any other character
    MLflow refuses separates words with ``_``. Never empty, ``.`` or ``..`` (MLflow treats
    keys as paths and refuses those segments).
    """
    text = unicodedata.normalize("NFKC", raw)
    for op, word in _KEY_WORDS:
        text = text.replace(op, f" {word} ")
    part = "_".join(_NOT_IN_KEY.sub(" ", text).split())
    if part in ("", ".", ".."):
        part = part.replace(".", "_") or "_"
    return part


def mlflow_value(text: object, limit: int) -> str:
    """A tag or param value: MLflow stores any text, but ``mlflow runs describe`` prints it
    to a terminal, so control characters are shown escaped; clipped to MLflow's limit."""
    return clip(visible(text), limit, short=True)


# ----------------------------------------------------------------------------- workflow commands

WorkflowCommand = NewType("WorkflowCommand", str)


def workflow_data(text: object) -> str:
    """The data of a workflow command (after the second ``::``), as the runner unescapes it:
    ``%``, CR and LF percent-encoded; other control characters and ``##[`` shown escaped."""
    s = _CONTROL.sub(lambda m: m.group() if m.group() in "\r\n" else _escape_char(m.group()),
                     str(text))
    s = s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return _ANYWHERE.sub(r"#\1\\x23", s)


def workflow_property(text: object) -> str:
    """A property value (``title=``, ``file=``): as data, and ``:`` and ``,`` encoded too."""
    return workflow_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(name: str, data: object, **properties: object) -> WorkflowCommand:
    """``::name k=v,k=v::data`` with every field escaped: one command, one line."""
    props = ",".join(f"{k}={workflow_property(v)}" for k, v in properties.items())
    return WorkflowCommand(f"::{name}{' ' + props if props else ''}::{workflow_data(data)}")


def emit_workflow_command(command: WorkflowCommand) -> None:
    """The one unguarded way to stdout, for fairgate's own commands (annotations)."""
    _write(lambda: click.echo(command))


_PLAIN_YAML = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none"})


def yaml_scalar(value: object) -> str:
    """A value for a YAML file fairgate writes (``fairgate init``): numbers and booleans as
    such, a plain word as is, any other text double-quoted with JSON escapes (YAML reads
    them), so no column name or value can end a line, start a comment or change a type."""
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _PLAIN_YAML.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)

