"""A malformed evaluation.json is one clear line naming the file and the field, not a traceback."""

import json
import re
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.eval.evaluation import Settings, plan_evaluation

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "factory_cell.yaml"
REMOVE = object()  # edited(...): delete the field


@pytest.fixture(scope="module")
def plan_json() -> dict:
    """The evaluation.json `testbed eval` writes for two policies, one with a constructor argument."""
    plan = plan_evaluation(LAUNCH, episodes=1, policy_flags=["a=builtin:expert", "b=builtin:expert"],
                           policy_args=["a.robot=gp7"])
    return plan.to_json(Settings(workers=1))


def edited(plan: dict, path: str, value: object) -> dict:
    """A copy of ``plan`` with the field at ``path`` (``settings.workers``, ``policies.1.args``) set or removed."""
    copy = json.loads(json.dumps(plan))
    *parents, last = path.split(".")
    target = copy
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is REMOVE:
        del target[last]
    else:
        target[int(last) if isinstance(target, list) else last] = value
    return copy


@pytest.mark.parametrize(("content", "message"), [
    (lambda plan: [], r"evaluation.json: expected a JSON object \(the plan `testbed eval` wrote\), got list"),
    (lambda plan: {"format": 1}, r"evaluation.json: launch_file is missing; expected a string"),
    (lambda plan: edited(plan, "format", 2), r"evaluation.json: format: expected 1 .*got 2"),
    (lambda plan: edited(plan, "policies", REMOVE), r"evaluation.json: policies is missing; expected a list"),
    (lambda plan: edited(plan, "policies", {"a": 1}), r"evaluation.json: policies: expected a list of objects"),
    (lambda plan: edited(plan, "policies.1", "b"), r"evaluation.json: policies\[1\]: expected an object"),
    (lambda plan: edited(plan, "policies.1.endpoint", 5), r"evaluation.json: policies\[1\].endpoint: expected a "
                                                          r"string .*got 5"),
    (lambda plan: edited(plan, "policies.0.args", {"robot": 6}), r"policies\[0\].args: expected an object of "
                                                                 r"strings, got \{'robot': 6\}"),
    (lambda plan: edited(plan, "overrides", "episodes:=1"), r"evaluation.json: overrides: expected a list of strings"),
    (lambda plan: edited(plan, "settings.workers", "2"), r"evaluation.json: settings.workers: expected a positive "
                                                         r"integer, got '2'"),
    (lambda plan: edited(plan, "settings.ray", REMOVE), r"evaluation.json: settings.ray is missing"),
    (lambda plan: edited(plan, "episode_ids", [0]), r"evaluation.json: episode_ids: expected a list of strings"),
])
def test_a_malformed_plan_is_named_when_resuming(plan_json, tmp_path, capsys, content, message):
    (tmp_path / "evaluation.json").write_text(json.dumps(content(plan_json)))
    assert main(["eval", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err


def test_the_plan_as_written_passes_the_check(plan_json, tmp_path, capsys):
    # the untouched plan passes the checks and reads back as it was planned
    from testbed.eval.evaluation import read_plan

    (tmp_path / "evaluation.json").write_text(json.dumps(plan_json))
    plan, settings = read_plan(tmp_path)
    assert [p.name for p in plan.policies] == ["a", "b"] and plan.policies[0].args == {"robot": "gp7"}
    assert settings.workers == 1
