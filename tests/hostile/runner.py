"""How CI runners read a step's output, restated from their sources, to test fairgate's.

GitHub Actions (actions/runner: ``ActionCommand.TryParseV2`` / ``TryParse`` and
``ActionCommandManager.TryProcessCommand``) reads stdout and stderr line by line, a line
ending at CR, LF or CRLF. A line is a v2 command when, after ``TrimStart()`` (.NET
``Char.IsWhiteSpace``), it starts with ``::`` and has a second ``::``; otherwise a v1 command
when ``##[`` occurs anywhere with a ``]`` after it. Azure Pipelines reads ``##vso[...]``
anywhere on a line. Which names are registered does not matter here: any name counts, so a
test fails on anything a future runner might honour.

The runner compares with .NET's culture-aware ``StartsWith``/``IndexOf``, which (with ICU)
skip Unicode's default-ignorable characters; ``lenient=True`` reads the line that way too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Char.IsWhiteSpace: categories Zs, Zl, Zp, and TAB, LF, VT, FF, CR, NEL (U+0085).
DOTNET_WHITESPACE = ("\t\n\v\f\r\x85 \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                     "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# DerivedCoreProperties.txt: Default_Ignorable_Code_Point.
IGNORABLE = re.compile("[\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                       "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
                       "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")


@dataclass(frozen=True)
class Command:
    syntax: str  # "v2" (::name::), "v1" (##[name]) or "vso" (##vso[name])
    name: str
    properties: dict[str, str] = field(default_factory=dict)
    data: str = ""
    line: str = ""


def lines(text: str) -> list[str]:
    """The runner's lines: split at CRLF, CR or LF (as .NET's StreamReader.ReadLine)."""
    return re.split(r"\r\n|\r|\n", text)


def unescape_data(s: str) -> str:
    return s.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def unescape_property(s: str) -> str:
    return (s.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":")
            .replace("%2C", ",").replace("%25", "%"))


def parse_v2(line: str) -> Command | None:
    """``::name k=v,k=v::data`` after leading whitespace (TryParseV2)."""
    message = line.lstrip(DOTNET_WHITESPACE)
    if not message.startswith("::"):
        return None
    end = message.find("::", 2)
    if end < 0:
        return None
    info = message[2:end]
    name, _, props = info.partition(" ")
    properties = {}
    for prop in filter(None, props.strip().split(",")):
        key, sep, value = prop.partition("=")
        if sep and key and value:
            properties[key] = unescape_property(value)
    return Command("v2", name, properties, unescape_data(message[end + 2:]), line)


def _bracketed(line: str, prefix: str, syntax: str) -> Command | None:
    start = line.find(prefix)
    if start < 0:
        return None
    close = line.find("]", start)
    if close < 0:
        return None
    info = line[start + len(prefix):close]
    name, _, props = info.partition(" ")
    properties = {}
    for prop in filter(None, props.split(";")):
        key, sep, value = prop.partition("=")
        if sep and key and value:
            properties[key] = value
    return Command(syntax, name, properties, line[close + 1:], line)


def parse_line(line: str, lenient: bool = False) -> list[Command]:
    """Every command one line carries: GitHub's (v2, else v1) and Azure's."""
    if lenient:
        line = IGNORABLE.sub("", line)
    found = []
    github = parse_v2(line) or _bracketed(line, "##[", "v1")
    if github is not None:
        found.append(github)
    azure = _bracketed(line, "##vso[", "vso")
    if azure is not None:
        found.append(azure)
    return found


def commands(text: str, lenient: bool = False) -> list[Command]:
    """Every command the runners would find in a step's output."""
    return [c for line in lines(text) for c in parse_line(line, lenient)]


def foreign_commands(text: str, ours: tuple[str, ...] = ("error", "warning", "notice")
                     ) -> list[Command]:
    """Commands other than fairgate's own annotations, read strictly and leniently.

    An annotation of ours is a v2 command at the very start of its line. It is still
    reported when the line also holds a ``##[`` or ``##vso[`` (a runner that did not take
    it as v2, or Azure, would run that); its escaped data cannot hold a line break, since
    the text was split into lines before parsing.
    """
    found = []
    for lenient in (False, True):
        for c in commands(text, lenient):
            own = c.syntax == "v2" and c.name in ours and c.line.startswith("::")
            bracketed = [_bracketed(c.line, p, s) for p, s in (("##[", "v1"), ("##vso[", "vso"))]
            if not own or any(bracketed):
                found.append(c)
    return found


def own_annotations(text: str) -> list[Command]:
    """fairgate's own annotation commands in ``text`` (strict reading)."""
    return [c for c in commands(text) if c.syntax == "v2" and c.line.startswith("::")
            and c.name in ("error", "warning", "notice")]
