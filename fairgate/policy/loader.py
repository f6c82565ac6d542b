"""Policy YAML: parse to plain data plus the line of every key path, strictly and within bounds.

YAML 1.2 booleans (so `on:` is a key); duplicate keys are errors that name the line. Merge
keys (`<<:`) are refused: PyYAML resolves them last-wins (against the YAML spec) and past
the duplicate-key check, so a merge could silently change a check's severity. Anchors and
aliases of whole values (`on: *groups`) stay allowed.

A policy is a small file people write (the shipped ones are 1-3 KB with under 110 values),
so reading it is bounded; each limit is an exit-2 error naming the file, the line and, where
known, the key path:

- :data:`MAX_BYTES` (256 KiB): no more than that plus one byte is ever read, and only from
  a regular file (a FIFO or `/dev/zero` is refused before it is opened).
- :data:`MAX_DEPTH` (64 levels of nesting; a policy needs about 6). Flow collections are
  checked as they are scanned and every node as it is composed, so PyYAML's recursive
  composer never goes deeper and no input can raise RecursionError.
- :data:`MAX_NODES` (5,000 values: keys, items and scalars, each alias counted as all the
  values it repeats; 100 checks take about 1,100). This bounds alias expansion: a 342-byte
  alias bomb that would expand to 10⁹ values is refused after a few hundred, in constant
  memory, and it bounds everything after parsing (line map, validation). Pure-Python
  PyYAML composes about 25,000 values a second, so any policy within these limits is
  parsed and validated in a fraction of a second (benchmarks/bench_policy.py).
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any, NoReturn

import yaml

from fairgate.errors import PolicyError
from fairgate.inputs.files import read_regular_file
from fairgate.report.safe import visible

Path_ = tuple[str | int, ...]

MAX_BYTES = 256 * 1024
MAX_DEPTH = 64
MAX_NODES = 5_000

_MERGE_TAG = "tag:yaml.org,2002:merge"
_OTHER_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


def read_policy(path: Path) -> tuple[bytes, str]:
    """The policy's bytes and text: a regular file of at most MAX_BYTES, in UTF-8."""
    raw = read_regular_file(path, MAX_BYTES, PolicyError, what="policy file",
                            expected="a YAML policy file")
    return raw, _decode(raw, str(path))


def _decode(raw: bytes, where: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is dropped); anything else names the line."""
    for bom, name in _OTHER_BOMS:
        if raw.startswith(bom):
            raise PolicyError(f"{where}: the policy is {name} (it starts with a {name} byte-order "
                              "mark); save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        line = raw.count(b"\n", 0, e.start) + 1
        raise PolicyError(f"{where}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at byte "
                          f"{e.start - line_start + 1} of the line); save the policy as UTF-8"
                          ) from None


class _BadValue(Exception):
    """A scalar its tag cannot read (a date 2030-02-30, `!!int abc`); named by the caller."""

    def __init__(self, node: yaml.Node, reason: str) -> None:
        super().__init__(reason)
        self.node = node


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans that composes within MAX_DEPTH and MAX_NODES.

    Aliases count as what they repeat, in nodes and in depth: sizes are kept per anchor, so
    the check costs one step per alias, however much it expands.
    """

    def __init__(self, text: str, where: str) -> None:
        super().__init__(text)
        self.where = where
        self.path: list[str | int] = []  # key path of the node being composed
        self.nodes = 0  # values composed so far, an alias counting as all it repeats
        self.reached = 0  # deepest path length inside the node being composed
        self.anchored: dict[str, tuple[int, int]] = {}  # anchor -> (values, levels below it)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        step = _step(parent, index)
        if step is not None:
            self.path.append(step)
        try:
            if isinstance(event, yaml.AliasEvent):
                size, height = self._anchor_of(event)
                self._nest(len(self.path) + height, event)
                self._count(size, event)
                return super().compose_node(parent, index)
            self._nest(len(self.path), event)
            self._count(1, event)
            nodes, reached, self.reached = self.nodes, self.reached, len(self.path)
            node = super().compose_node(parent, index)
            if event.anchor is not None:
                self.anchored[event.anchor] = (self.nodes - nodes + 1, self.reached - len(self.path))
            self.reached = max(reached, self.reached)
            return node
        finally:
            if step is not None:
                self.path.pop()

    def _anchor_of(self, event: yaml.AliasEvent) -> tuple[int, int]:
        """(values, levels below it) of the node an alias repeats."""
        if event.anchor in self.anchors and event.anchor not in self.anchored:
            self._fail(event, f"alias *{event.anchor} is used inside the value it names (a "
                              "recursive structure)")
        return self.anchored.get(str(event.anchor), (0, 0))  # undefined: the composer says so

    def _nest(self, depth: int, event: yaml.Event) -> None:
        self.reached = max(self.reached, depth)
        if depth >= MAX_DEPTH:
            what = (f"alias *{event.anchor} nests the policy" if isinstance(event, yaml.AliasEvent)
                    else "nested")
            self._fail(event, f"{what} deeper than {MAX_DEPTH} levels (the limit for a policy)")

    def _count(self, n: int, event: yaml.Event) -> None:
        self.nodes += n
        if self.nodes <= MAX_NODES:
            return
        if isinstance(event, yaml.AliasEvent):
            self._fail(event, f"alias *{event.anchor} repeats {n:,} values, which takes the "
                              f"policy past {MAX_NODES:,} values (the limit for a policy); "
                              "write the values out or use fewer aliases")
        self._fail(event, f"the policy holds more than {MAX_NODES:,} values (keys, items and "
                          "scalars; the limit for a policy)")

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        """Refuse deep flow nesting as it is scanned: the scanner reads ahead of the composer,
        and each open `[` or `{` it holds makes every further token cost more."""
        if self.flow_level >= MAX_DEPTH:
            self._fail(self.get_mark(), f"nested deeper than {MAX_DEPTH} levels (the limit for "
                                        "a policy)")
        super().fetch_flow_collection_start(TokenClass)

    def _fail(self, at: yaml.Event | yaml.Mark, message: str) -> NoReturn:
        mark = at if isinstance(at, yaml.Mark) else at.start_mark
        line = mark.line + 1 if mark else 1
        raise PolicyError(f"{self.where}:{line}: {_short(tuple(self.path))}: {message}")

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except KeyError:  # `!!bool maybe`: not one of the tag's words
            raise _BadValue(node, "not a value of that type") from None
        except (ValueError, TypeError, OverflowError, IndexError, AttributeError) as e:
            # PyYAML's scalar constructors fail like this on values their tag cannot read
            raise _BadValue(node, str(e) or type(e).__name__) from None


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _step(parent: yaml.Node | None, index: Any) -> str | int | None:
    """The key path step to a child: its index, or the key it is the value of (None for keys)."""
    if parent is None or index is None:  # the root, or a key (at its mapping's level)
        return None
    if isinstance(index, int):
        return index
    return str(index.value) if isinstance(index, yaml.ScalarNode) else "?"


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], where: str,
          paths: dict[int, Path_]) -> None:
    """Record the line of every key path; refuse duplicate and merge keys.

    Depth and size are already bounded by the loader, so this recursion is too.
    """
    lines.setdefault(path, node.start_mark.line + 1)
    paths.setdefault(id(node), path)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            line = key.start_mark.line + 1
            if key.tag == _MERGE_TAG:
                raise PolicyError(
                    f"{where}:{line}: {_dotted((*path, '<<'))}: merge keys (<<) are not "
                    "supported: they can silently override keys; write the keys out (an alias "
                    "of a whole value, like `on: *groups`, is fine)")
            if name in seen:
                raise PolicyError(
                    f"{where}:{line}: {_dotted((*path, name))}: duplicate key "
                    f"(first given on line {seen[name]})"
                )
            seen[name] = line
            lines[(*path, name)] = line
            _walk(value, (*path, name), lines, where, paths)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _walk(item, (*path, i), lines, where, paths)


def parse_yaml(text: str, where: str) -> tuple[Any, dict[Path_, int]]:
    """YAML to plain data plus the line of every key path; see the module for what is refused."""
    lines: dict[Path_, int] = {}
    paths: dict[int, Path_] = {}
    loader = None
    try:
        loader = _Loader(text, where)
        node = loader.get_single_node()
        if node is None:
            raise PolicyError(f"{where}: the policy is empty")
        _walk(node, (), lines, where, paths)
        return loader.construct_document(node), lines
    except _BadValue as e:
        path = paths.get(id(e.node), ())
        raise PolicyError(f"{where}:{e.node.start_mark.line + 1}: {_dotted(path)}: cannot read "
                          f"{_clip(str(e.node.value))!r} as {e.node.tag.rsplit(':', 1)[-1]}: "
                          f"{_clip(str(e))}") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise PolicyError(f"{where}:{line}: not valid YAML: character U+{int(e.character):04X} "
                          "is not allowed in YAML") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f":{mark.line + 1}" if mark else ""
        raise PolicyError(f"{where}{at}: not valid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise PolicyError(f"{where}: not valid YAML: {e}") from None
    except (ValueError, OverflowError) as e:  # the scanner on an escape like "\U99999999"
        at = f":{loader.get_mark().line + 1}" if loader is not None else ""
        raise PolicyError(f"{where}{at}: not valid YAML: {_clip(str(e))}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _dotted(path: Path_) -> str:
    """``checks[0].metric``; keys are policy text, so control characters are shown escaped
    (a key of ``\x1e`` would otherwise split the message's lines)."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{visible(p)}" if out else visible(p))
    return out or "(top level)"


def _short(path: Path_, keep: int = 6) -> str:
    """A key path for a message: deep paths keep their first and last steps."""
    if len(path) <= 2 * keep:
        return _dotted(path)
    return f"{_dotted(path[:keep])} … {_dotted(path[-keep:])}"


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _line_for(lines: dict[Path_, int], path: Path_) -> int:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return 1
