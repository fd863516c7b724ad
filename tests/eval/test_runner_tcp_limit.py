"""A run's TCP speed guard monitors the lowest limit that applies to each robot."""

import pytest

from testbed.control import ControlLoop
from testbed.eval import runner
from testbed.robots import load_robot
from testbed.scenario import load

ROBOT = "cell.robots[0].controller"


@pytest.mark.parametrize(("overrides", "expected"), [
    ([f"{ROBOT}.reduced_speed:=true", f"{ROBOT}.tcp_speed_limit_m_s:=3.0"], 0.25),  # was 3.0
    ([f"{ROBOT}.reduced_speed:=true", f"{ROBOT}.tcp_speed_limit_m_s:=0.1"], 0.1),
    ([f"{ROBOT}.reduced_speed:=true"], 0.25),
    ([f"{ROBOT}.tcp_speed_limit_m_s:=0.7"], 0.7),
    ([], None),
])
def test_the_run_guard_holds_the_lowest_applicable_limit(overrides, expected):
    scenario = load("launch/factory_cell.yaml", ["cell.robots[0].model:=sia10f", *overrides]).scenario
    model = load_robot("sia10f")
    assert model.reduced_tcp_speed_m_s == 0.25 and model.tcp_speed_m_s == 1.0
    control = ControlLoop([model], 1 / 240)
    guard = runner._tcp_speed_guard(scenario, control, [model])
    if expected is None:
        assert guard is None  # the model's own tcp_speed_m_s is a capability, not a monitored limit
    else:
        assert guard.limits_m_s.tolist() == [expected]
