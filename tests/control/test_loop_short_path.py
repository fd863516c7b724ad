"""The tick's short path (far from every joint limit) gives the very set-points of the full limit term."""

from __future__ import annotations

import numpy as np
from control_fakes import arm7, scara4
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from testbed.control import ControlLoop

DT = 0.001
MODELS = [arm7(), scara4(), arm7("arm7b")]
N_J = [m.n_joints for m in MODELS]


class FullLimitTermLoop(ControlLoop):
    """The same loop, never taking the short path."""

    def _count_far_ticks(self) -> None:
        self._far_ticks = 0


@st.composite
def command(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["chunk", "chunk", "ticks", "ticks", "pstop", "reset", "scale"]))
    robot = draw(st.integers(0, len(MODELS) - 1))
    if kind == "chunk":
        steps = draw(st.integers(1, 6))
        span = draw(st.sampled_from([0.5, 1.5, 4.0]))  # far from the limits, near them, beyond them
        values = draw(st.lists(st.floats(-span, span), min_size=steps * N_J[robot], max_size=steps * N_J[robot]))
        return ("chunk", robot, np.array(values).reshape(steps, N_J[robot]), draw(st.floats(-0.05, 0.05)),
                draw(st.sampled_from([0.001, 0.01, 0.02, 0.1])), draw(st.booleans()))
    if kind == "ticks":
        return ("ticks", draw(st.integers(1, 400)))
    if kind == "scale":
        return ("scale", draw(st.sampled_from([0.3, 1.0])))
    return (kind, robot)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=st.lists(command(), min_size=1, max_size=20))
def test_short_path_gives_the_full_paths_set_points_and_events(commands: list[tuple]) -> None:
    loops = [ControlLoop(MODELS, DT, stream_timeout_s=0.2), FullLimitTermLoop(MODELS, DT, stream_timeout_s=0.2)]
    for loop in loops:
        loop.reset(np.zeros((len(MODELS), 7)))
    t, short = 0.0, 0
    for cmd in commands:
        for loop in loops:
            if cmd[0] == "chunk":
                _, robot, rows, t_offset, dt, hold = cmd
                loop.submit_chunk(robot, rows, t + t_offset, dt, hold_after=hold)
            elif cmd[0] == "pstop":
                loop.protective_stop(cmd[1], "test")
            elif cmd[0] == "reset":
                loop.reset(loops[0].setpoint.copy())
            elif cmd[0] == "scale":
                loop.speed_scale = cmd[1]
        for _ in range(cmd[1] if cmd[0] == "ticks" else 1):
            t += DT
            short += loops[0]._far_ticks > 0
            fast, full = (loop.tick(t, loop.setpoint.copy()).copy() for loop in loops)
            assert np.array_equal(fast, full)
            assert np.array_equal(loops[0].setpoint_vel, loops[1].setpoint_vel)
    first, second = ([(e.t_s, e.robot, e.kind, e.detail) for e in loop.drain_events()] for loop in loops)
    assert first == second
    event("short path taken" if short else "short path never taken")
