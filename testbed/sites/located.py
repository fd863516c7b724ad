"""Where in a launch file a sites setting was written, for error messages (``file:line``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from testbed.scenario.source_map import SourceMap, parse_yaml


class Locator:
    """Turns a field path into the ``file:line `` that starts a located message ("" without a file).

    Args:
        launch_file: the launch file the scenario came from, or None.
    """

    def __init__(self, launch_file: str | Path | None) -> None:
        self._file = launch_file
        self._source: SourceMap | None = None
        if launch_file is not None:
            try:
                _, self._source = parse_yaml(Path(launch_file).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                self._source = None

    def __call__(self, loc: Sequence[str | int]) -> str:
        """``file:line `` of ``loc`` (or of its nearest parent in the file); ``file: `` or "" when unknown."""
        if self._file is None:
            return ""
        line = self._source.line_of(loc) if self._source is not None else None
        return f"{self._file}:{line} " if line else f"{self._file}: "
