"""Load a launch file: parse, apply overrides, validate, and locate every error."""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from testbed.errors import ScenarioError
from testbed.scenario.overrides import apply_overrides, dotted
from testbed.scenario.schema import Scenario
from testbed.scenario.source_map import SourceMap, parse_yaml

if TYPE_CHECKING:
    from testbed.control.job import Job


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario with where it came from.

    Args:
        scenario: the validated launch file.
        path: the launch file read.
        overrides: the ``key:=value`` overrides applied, in order.
    """

    scenario: Scenario
    path: Path
    overrides: tuple[str, ...]
    jobs: Mapping[int, Job] = field(default_factory=dict)  # robot index -> its parsed, planned-once job

    def resolved_yaml(self) -> str:
        """The scenario with defaults filled in and overrides applied, as YAML."""
        return yaml.safe_dump(self.scenario.model_dump(mode="json"), sort_keys=False)


def load(path: str | Path, overrides: Sequence[str] = ()) -> LoadedScenario:
    """Read, override and validate a launch file.

    Raises:
        ScenarioError: one line naming the file, line, field path and what was expected.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read launch file ({exc.strerror or exc})") from exc
    try:
        data, source = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(f"{where}: malformed YAML: {problem}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}:1: expected a mapping of settings at the top level, got {type(data).__name__}")
    data = apply_overrides(data, overrides)
    try:
        scenario = Scenario.model_validate_json(json.dumps(data, default=str))
    except ValidationError as exc:
        raise ScenarioError(_describe(exc, path, source, overrides)) from exc
    _check_references(scenario, path, source)
    jobs = {i: _load_job(robot.job, i, path, source, robot.model) for i, robot in enumerate(scenario.cell.robots)
            if robot.job is not None}
    return LoadedScenario(scenario=scenario, path=path, overrides=tuple(overrides), jobs=jobs)


def _load_job(job: dict[str, Any] | str, index: int, path: Path, source: SourceMap, model_name: str) -> Job:
    """Parse a robot's job and plan it once from the robot's home pose, so a bad job fails before the run."""
    from testbed.control.job import load_job, parse_job, plan_job
    from testbed.robots import load_robot

    if isinstance(job, str):
        job_path = Path(job) if Path(job).is_absolute() else path.parent / job
        if not job_path.is_file() and Path(job).is_file():
            job_path = Path(job)
        parsed = load_job(job_path)
    else:
        program = ("cell", "robots", index, "job", "program")
        steps = job.get("program")
        lines = [source.line_of((*program, i)) or 0 for i in range(len(steps))] if isinstance(steps, list) else None
        parsed = parse_job(job, source=str(path), lines=lines)
    model = load_robot(model_name)
    plan_job(parsed, model, model.home)
    return parsed


def _check_references(scenario: Scenario, path: Path, source: SourceMap) -> None:
    from testbed.robots import known_robots

    known = known_robots()
    for i, robot in enumerate(scenario.cell.robots):
        if robot.model not in known:
            loc: tuple[str | int, ...] = ("cell", "robots", i, "model")
            guess = difflib.get_close_matches(robot.model, known, n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            raise ScenarioError(
                f"{_where(path, source, loc)} {dotted(loc)}: unknown robot {robot.model!r}.{hint} "
                f"(known: {', '.join(known)})"
            )
    if scenario.workload.orders is not None:
        orders = Path(scenario.workload.orders)
        if not orders.is_absolute():
            orders = Path.cwd() / orders
        if not orders.is_dir():
            loc = ("workload", "orders")
            raise ScenarioError(
                f"{_where(path, source, loc)} workload.orders: directory {scenario.workload.orders!r} not found "
                "(write one with `testbed datasets import-orders FILE.csv --out DIR`)"
            )


def _describe(exc: ValidationError, path: Path, source: SourceMap, overrides: Sequence[str]) -> str:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    field = dotted(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        message = f"unknown key {loc[-1]!r}.{hint} (allowed: {', '.join(allowed)})"
    elif kind == "missing":
        message = "required but missing"
    else:
        message = f"{_expected(err['msg'])}, got {err.get('input')!r}"
    # an invalid list item also makes its list too short: that is one mistake, not two
    more = sum(1 for e in exc.errors()[1:] if tuple(e["loc"]) != loc[: len(e["loc"])])
    suffix = f" (+{more} more error{'s' if more > 1 else ''})" if more else ""
    origin = _from_override(loc, overrides)
    where = f"override {origin!r} ->" if origin else _where(path, source, loc)
    return f"{where} {field}: {message}{suffix}"


def _expected(msg: str) -> str:
    return msg.replace("Input should be", "expected").replace("Value error, ", "")


def _where(path: Path, source: SourceMap, loc: Sequence[str | int]) -> str:
    line = source.line_of(loc)
    return f"{path}:{line}" if line else f"{path}:"


def _from_override(loc: Sequence[str | int], overrides: Sequence[str]) -> str | None:
    from testbed.scenario.overrides import parse_path

    for text in reversed(overrides):
        key = text.split(":=", 1)[0].strip()
        try:
            opath = parse_path(key)
        except ScenarioError:
            continue
        if tuple(opath) == tuple(loc[: len(opath)]):
            return text
    return None


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        model = model_in(model.model_fields[part].annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``tuple[RobotConfig, ...] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = model_in(arg)
            if found is not None:
                return found
    return None
