"""YAML parsing that remembers where each key was written, for located error messages.

Launch files, site profiles and ``key:=value`` overrides are read with ``LaunchLoader``: PyYAML's safe loader,
except that a key given twice in one mapping is an error naming its line (PyYAML keeps the last one silently),
and that numbers with an exponent but no dot, such as ``1e-9`` or ``2E6``, are floats as in YAML 1.2 (YAML 1.1
reads them as strings).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import yaml
from yaml.constructor import ConstructorError

_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# YAML 1.1's floats (PyYAML's pattern), with the exponent's sign optional and a dot no longer required
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)


class LaunchLoader(yaml.SafeLoader):
    """The safe loader, refusing duplicate mapping keys and reading ``1e-9`` as a float.

    Raises (from ``yaml.load``):
        yaml.constructor.ConstructorError: a duplicate key; its ``problem_mark`` is the second key's place.
    """

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, _FLOAT if tag == _FLOAT_TAG else regexp) for tag, regexp in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # every mapping passes here before merge keys (<<) are folded in: its own keys are checked then, once
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the constructor refuses it with its own message
                    continue
                if first is not key_node:
                    raise ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r} (first given on line {first.start_mark.line + 1}; a key may "
                        "appear once per mapping)", key_node.start_mark)
        super().flatten_mapping(node)


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
        # the last match: keys merged in with << come first, and a key written in the mapping itself wins
        for key_node, value_node in reversed(node.value):
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                return key_node, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item = node.value[part]
        return item, item
    return None


def parse_yaml(text: str) -> tuple[Any, SourceMap]:
    """Parse YAML safely (``LaunchLoader``), returning the data and a map of where each key stands.

    Raises:
        yaml.YAMLError: the text is not valid YAML or repeats a key (callers turn it into a located error).
    """
    loader = LaunchLoader(text)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    finally:
        loader.dispose()
    return data, SourceMap(root)


def load_value(text: str) -> Any:
    """One YAML value (e.g. an override's), read as launch files are.

    Raises:
        yaml.YAMLError: the text is not valid YAML, or repeats a key.
    """
    return yaml.load(text, Loader=LaunchLoader)  # a SafeLoader: builds plain data only
