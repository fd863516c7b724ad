"""Lifecycle of an RT-component style controller: every allowed and refused transition."""

from __future__ import annotations

import pytest

from testbed.control.lifecycle import TRANSITIONS, Component, LifecycleState
from testbed.errors import ControllerError

S = LifecycleState

# the path from CREATED to each state
PATHS: dict[LifecycleState, list[tuple[str, str]]] = {
    S.CREATED: [],
    S.INACTIVE: [("initialize", "")],
    S.ACTIVE: [("initialize", ""), ("activate", "")],
    S.PROTECTIVE_STOP: [("initialize", ""), ("activate", ""), ("protective_stop", "test")],
    S.EMERGENCY_STOP: [("initialize", ""), ("activate", ""), ("emergency_stop", "test")],
    S.ERROR: [("initialize", ""), ("activate", ""), ("fault", "test")],
    S.FINALIZED: [("initialize", ""), ("finalize", "")],
}

EXPECTED: dict[tuple[LifecycleState, str], LifecycleState] = {
    (S.CREATED, "initialize"): S.INACTIVE,
    (S.CREATED, "finalize"): S.FINALIZED,
    (S.INACTIVE, "activate"): S.ACTIVE,
    (S.INACTIVE, "finalize"): S.FINALIZED,
    (S.INACTIVE, "emergency_stop"): S.EMERGENCY_STOP,
    (S.INACTIVE, "fault"): S.ERROR,
    (S.ACTIVE, "deactivate"): S.INACTIVE,
    (S.ACTIVE, "protective_stop"): S.PROTECTIVE_STOP,
    (S.ACTIVE, "emergency_stop"): S.EMERGENCY_STOP,
    (S.ACTIVE, "fault"): S.ERROR,
    (S.PROTECTIVE_STOP, "reset"): S.INACTIVE,
    (S.PROTECTIVE_STOP, "emergency_stop"): S.EMERGENCY_STOP,
    (S.PROTECTIVE_STOP, "fault"): S.ERROR,
    (S.EMERGENCY_STOP, "reset"): S.INACTIVE,
    (S.EMERGENCY_STOP, "fault"): S.ERROR,
    (S.ERROR, "reset"): S.INACTIVE,
    (S.ERROR, "finalize"): S.FINALIZED,
}

# stop requests in a state that is already at least as stopped are no-ops, not refusals
NOOPS = {
    (S.PROTECTIVE_STOP, "protective_stop"),
    (S.EMERGENCY_STOP, "protective_stop"),
    (S.ERROR, "protective_stop"),
    (S.EMERGENCY_STOP, "emergency_stop"),
    (S.ERROR, "emergency_stop"),
    (S.ERROR, "fault"),
}


class Recorder(Component):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.changes: list[tuple[str, str, str]] = []
        super().__init__("rec", listener=lambda c, old, new, tr, reason: self.changes.append((old.name, new.name, tr)))

    def on_initialize(self) -> None:
        self.calls.append("on_initialize")

    def on_activated(self) -> None:
        self.calls.append("on_activated")

    def on_execute(self) -> None:
        self.calls.append("on_execute")

    def on_deactivated(self) -> None:
        self.calls.append("on_deactivated")

    def on_aborting(self) -> None:
        self.calls.append("on_aborting")

    def on_error(self) -> None:
        self.calls.append("on_error")

    def on_reset(self) -> None:
        self.calls.append("on_reset")

    def on_finalize(self) -> None:
        self.calls.append("on_finalize")


def drive(comp: Component, state: LifecycleState) -> None:
    for name, reason in PATHS[state]:
        method = getattr(comp, name)
        method(reason) if reason else method()
    assert comp.state is state


def apply(comp: Component, transition: str) -> None:
    method = getattr(comp, transition)
    if transition in ("protective_stop", "emergency_stop", "fault"):
        method("why")
    else:
        method()


ALL_CASES = [(s, t) for s in S for t in TRANSITIONS]


@pytest.mark.parametrize(("state", "transition"), ALL_CASES, ids=[f"{s.name}-{t}" for s, t in ALL_CASES])
def test_transition_is_allowed_refused_or_noop_as_specified(state: LifecycleState, transition: str) -> None:
    comp = Recorder()
    drive(comp, state)
    if (state, transition) in EXPECTED:
        apply(comp, transition)
        assert comp.state is EXPECTED[(state, transition)]
    elif (state, transition) in NOOPS:
        n_changes = len(comp.changes)
        apply(comp, transition)
        assert comp.state is state
        assert len(comp.changes) == n_changes
    else:
        with pytest.raises(ControllerError, match=rf"'{transition}' refused in state {state.name}"):
            apply(comp, transition)
        assert comp.state is state


def test_every_case_is_classified() -> None:
    assert set(EXPECTED) | NOOPS | {c for c in ALL_CASES if c not in EXPECTED and c not in NOOPS} == set(ALL_CASES)
    assert not set(EXPECTED) & NOOPS


def test_hooks_run_in_lifecycle_order() -> None:
    comp = Recorder()
    comp.initialize()
    comp.activate()
    comp.execute()
    comp.deactivate()
    comp.execute()  # inactive: no on_execute
    comp.finalize()
    assert comp.calls == ["on_initialize", "on_activated", "on_execute", "on_deactivated", "on_finalize"]


def test_fault_runs_aborting_then_error_and_reset_clears_it() -> None:
    comp = Recorder()
    drive(comp, S.ACTIVE)
    comp.calls.clear()
    comp.fault("encoder lost")
    assert comp.state is S.ERROR
    assert comp.last_error == "encoder lost"
    comp.execute()
    comp.reset()
    assert comp.calls == ["on_aborting", "on_error", "on_error", "on_reset"]
    assert comp.state is S.INACTIVE
    assert comp.last_error is None


def test_raising_on_execute_sends_component_to_error() -> None:
    class Broken(Component):
        def on_execute(self) -> None:
            raise RuntimeError("servo overheat")

    comp = Broken("broken")
    comp.initialize()
    comp.activate()
    comp.execute()
    assert comp.state is S.ERROR
    assert comp.last_error is not None and "servo overheat" in comp.last_error


def test_raising_on_activated_refuses_with_error_state() -> None:
    class Broken(Component):
        def on_activated(self) -> None:
            raise ValueError("no power")

    comp = Broken("broken")
    comp.initialize()
    with pytest.raises(ControllerError, match=r"on_activated failed during 'activate'.*now in ERROR"):
        comp.activate()
    assert comp.state is S.ERROR


def test_listener_sees_each_change_with_transition_name() -> None:
    comp = Recorder()
    drive(comp, S.PROTECTIVE_STOP)
    comp.reset()
    assert comp.changes == [
        ("CREATED", "INACTIVE", "initialize"),
        ("INACTIVE", "ACTIVE", "activate"),
        ("ACTIVE", "PROTECTIVE_STOP", "protective_stop"),
        ("PROTECTIVE_STOP", "INACTIVE", "reset"),
    ]


def test_a_stop_keeps_its_reason_until_reset() -> None:
    from testbed.control.lifecycle import Component

    component = Component("arm")
    component.initialize()
    component.activate()
    component.protective_stop("stream_timeout")
    assert component.last_error == "stream_timeout"
    component.reset()
    assert component.last_error is None
