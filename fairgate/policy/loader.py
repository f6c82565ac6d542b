"""Policy YAML: parse to plain data plus the line of every key path, strictly.

YAML 1.2 booleans (so `on:` is a key) and duplicate keys as errors that name the line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from fairgate.errors import PolicyError

Path_ = tuple[str | int, ...]



class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: `on`, `yes`, `no`, `off` stay strings."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], where: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            line = key.start_mark.line + 1
            if name in seen:
                raise PolicyError(
                    f"{where}:{line}: {_dotted((*path, name))}: duplicate key "
                    f"(first given on line {seen[name]})"
                )
            seen[name] = line
            lines[(*path, name)] = line
            _walk(value, (*path, name), lines, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _walk(item, (*path, i), lines, where)


def parse_yaml(text: str, where: str) -> tuple[Any, dict[Path_, int]]:
    """YAML to plain data plus the line of every key path; duplicate keys are errors."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        if node is None:
            raise PolicyError(f"{where}: the policy is empty")
        _walk(node, (), lines, where)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise PolicyError(f"{where}{line}: not valid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise PolicyError(f"{where}: not valid YAML: {e}") from None
    finally:
        loader.dispose()




def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _line_for(lines: dict[Path_, int], path: Path_) -> int:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return 1
