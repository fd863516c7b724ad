"""Property: whatever is streamed, set-points never exceed position, velocity or acceleration limits."""

from __future__ import annotations

import numpy as np
from control_fakes import arm7, scara4
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.control import ControlLoop

DT = 0.002
MODELS = [arm7(), scara4()]
N_J = [m.n_joints for m in MODELS]

weird = st.one_of(
    st.floats(-10.0, 10.0),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e9, -1e9, 1e300]),
)


@st.composite
def command(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["chunk", "chunk", "chunk", "ticks", "pstop"]))
    robot = draw(st.integers(0, 1))
    if kind == "chunk":
        steps = draw(st.integers(1, 6))
        values = draw(st.lists(weird, min_size=steps * N_J[robot], max_size=steps * N_J[robot]))
        rows = np.array(values).reshape(steps, N_J[robot])
        if draw(st.booleans()):  # mostly-sane chunks reach the limits more often than junk
            rows = np.clip(np.nan_to_num(rows, posinf=5.0, neginf=-5.0), -5.0, 5.0)
        t_offset = draw(st.floats(-0.05, 0.05))
        dt = draw(st.sampled_from([0.002, 0.01, 0.02, 0.1]))
        return ("chunk", robot, rows, t_offset, dt, draw(st.booleans()))
    if kind == "ticks":
        return ("ticks", draw(st.integers(1, 120)))
    return ("pstop", robot)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    commands=st.lists(command(), min_size=1, max_size=25),
    speed_scale=st.sampled_from([1.0, 0.5, 0.1]),
    start=st.floats(-0.1, 0.3),
)
def test_set_points_respect_limits_for_any_command_stream(
    commands: list[tuple], speed_scale: float, start: float
) -> None:
    loop = ControlLoop(MODELS, DT, stream_timeout_s=0.05, speed_scale=speed_scale)
    lower, upper, vmax, amax = loop.limits
    loop.reset(np.clip(np.where(loop.joint_mask, start, 0.0), lower, upper))
    history = [loop.setpoint.copy()]
    t = 0.0
    for cmd in commands:
        if cmd[0] == "chunk":
            _, robot, rows, t_offset, dt, hold = cmd
            loop.submit_chunk(robot, rows, t + t_offset, dt, hold_after=hold)
        elif cmd[0] == "pstop":
            loop.protective_stop(cmd[1], "test")
        else:
            for _ in range(cmd[1]):
                t += DT
                history.append(loop.tick(t, loop.setpoint).copy())
    for _ in range(50):  # let every motion and stop play out
        t += DT
        history.append(loop.tick(t, loop.setpoint).copy())
    sp = np.array(history)
    assert np.all(np.isfinite(sp))
    assert np.all(sp >= lower - 1e-12) and np.all(sp <= upper + 1e-12)
    vel = np.diff(sp, axis=0) / DT
    assert np.all(np.abs(vel) <= vmax * speed_scale * (1 + 1e-9) + 1e-12)
    acc = np.diff(vel, axis=0) / DT
    assert np.all(np.abs(acc) <= amax * speed_scale * (1 + 1e-6) + 1e-6)
