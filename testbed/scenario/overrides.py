"""Command-line overrides in the ROS 2 launch style: ``key:=value`` with dotted paths."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from testbed.errors import ScenarioError
from testbed.scenario.source_map import load_value

_INDEX = re.compile(r"^(?P<name>[^\[\]]+)(?P<indices>(\[\d+\])*)$")


def parse_path(path: str) -> list[str | int]:
    """Split ``cell.robots[0].model`` or ``cell.robots.0.model`` into ``["cell", "robots", 0, "model"]``."""
    parts: list[str | int] = []
    for piece in path.split("."):
        match = _INDEX.match(piece)
        if not piece or match is None:
            raise ScenarioError(f"override path {path!r}: malformed segment {piece!r}")
        name = match.group("name")
        parts.append(int(name) if name.isdigit() else name)
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group("indices")))
    return parts


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Parse one ``key:=value``; the value is read as a YAML scalar or flow collection."""
    if ":=" not in text:
        raise ScenarioError(f"override {text!r}: expected key:=value (e.g. episodes:=3 or cell.conveyor.speed:=0.15)")
    key, raw = text.split(":=", 1)
    try:
        value = load_value(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ScenarioError(f"override {text!r}: value is not valid YAML ({problem})") from exc
    return parse_path(key.strip()), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return ``data`` with every override applied in order (``data`` itself is modified)."""
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            nxt = _get(node, part)
            if nxt is None:
                if isinstance(part, int) or not isinstance(node, dict):
                    where = dotted(path[: depth + 1])
                    raise ScenarioError(f"override {text!r}: {where} does not exist in the launch file")
                nxt = node[part] = {}
            node = nxt
        last = path[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or not 0 <= last < len(node):
                raise ScenarioError(f"override {text!r}: index {last} out of range for {dotted(path[:-1])}")
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ScenarioError(f"override {text!r}: {dotted(path[:-1])} is a value, not a section")
    return data


def _get(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def dotted(path: Sequence[str | int]) -> str:
    """``["cell", "robots", 0, "model"]`` as ``cell.robots[0].model``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
