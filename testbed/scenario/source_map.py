"""YAML parsing that remembers where each key was written, for located error messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class SourceMap:
    """Maps a field path like ``("cell", "robots", 0, "model")`` to its 1-based line in the file."""

    def __init__(self, root: yaml.Node | None) -> None:
        self._root = root

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """Line of the deepest node along ``path`` that exists in the file, or None."""
        node = self._root
        line = None if node is None else node.start_mark.line + 1
        for part in path:
            child = _child(node, part)
            if child is None:
                break
            key_node, node = child
            line = key_node.start_mark.line + 1
        return line


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                return key_node, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item = node.value[part]
        return item, item
    return None


def parse_yaml(text: str) -> tuple[Any, SourceMap]:
    """Parse YAML safely, returning the data and a map of where each key stands.

    Raises:
        yaml.YAMLError: the text is not valid YAML (callers turn it into a located error).
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    data = yaml.safe_load(text)
    return data, SourceMap(root)
