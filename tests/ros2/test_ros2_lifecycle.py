"""Each controller as a lifecycle node, driven over DDS from a client in another rclpy context.

The run's node is started on a real ``ControlLoopBackend`` ticked by a ``TickerThread`` (no simulator);
the client speaks only lifecycle_msgs and std_srvs. Discovery stays on this host, on a domain of its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from testbed.bridge.controller_backend import ControlLoopBackend, TickerThread
from testbed.control import ControlLoop
from testbed.eval.events import EventStream
from testbed.robots import load_robot
from testbed.ros2 import CellSpec, RobotSpec, Ros2Bridge, Ros2Settings

GP7 = load_robot("gp7")
DOMAIN = 1 + (os.getpid() * 7 + 50) % 100
# longer than the lifecycle node waits for the run's answer (testbed.ros2.lifecycle: COMMAND_TIMEOUT_S + 1 s)
LATE_ANSWER_S = 4.0


class LateBackend(ControlLoopBackend):
    """A real backend whose first lifecycle request is taken only after ``LATE_ANSWER_S`` (a busy run)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.late = threading.Event()  # set once the late request was taken
        self._first = True

    def change_state(self, robot: str, transition: Any) -> Any:
        if self._first:
            self._first = False
            time.sleep(LATE_ANSWER_S)
            future = super().change_state(robot, transition)
            future.add_done_callback(lambda _: self.late.set())
            return future
        return super().change_state(robot, transition)


@pytest.fixture()
def bridge(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Ros2Bridge, ControlLoopBackend]]:
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    loop = ControlLoop([GP7], 0.004)
    loop.reset(np.asarray(GP7.home, dtype=np.float64)[None, :].copy())
    backend_class = getattr(request, "param", ControlLoopBackend)
    backend = backend_class(loop, names=["arm1"], job_loader=False)
    spec = RobotSpec("arm1", "gp7", GP7.urdf_path, tuple(GP7.joint_names), GP7.tcp_link, (0.0, 0.0, 0.3),
                     (0.0, 0.0, 0.0), commandable=True)
    events = EventStream(tmp_path / "events.jsonl")
    with TickerThread(backend), Ros2Bridge(Ros2Settings(domain_id=DOMAIN), CellSpec("unit", (spec,)), events,
                                           backend) as node:
        yield node, backend
    backend.close()
    events.close()


class Client:
    """A lifecycle client in its own context (as another process would be)."""

    def __init__(self) -> None:
        import rclpy
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.executors import SingleThreadedExecutor
        from std_srvs.srv import Trigger

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        self.node = rclpy.create_node("lifecycle_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        base = "/cell/arm1/controller"
        self.change = self.node.create_client(ChangeState, f"{base}/change_state")
        self.get = self.node.create_client(GetState, f"{base}/get_state")
        self.clear = self.node.create_client(Trigger, f"{base}/clear_stop")
        self.stop = self.node.create_client(Trigger, f"{base}/protective_stop")
        self.ready: set[str] = set()

    def call(self, client: Any, request: Any) -> Any:
        if client.srv_name not in self.ready:
            assert client.wait_for_service(timeout_sec=20.0), client.srv_name
            # the request path is matched; give the reply path a moment too (DDS matches each separately,
            # and a reply sent before that is lost)
            self.executor.spin_until_future_complete(_idle_future(), timeout_sec=0.5)
            self.ready.add(client.srv_name)
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=20.0)
        assert future.done(), client.srv_name
        return future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return str(self.call(self.get, GetState.Request()).current_state.label)

    def transition(self, transition_id: int) -> bool:
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.id = transition_id
        return bool(self.call(self.change, request).success)

    def trigger(self, client: Any) -> Any:
        from std_srvs.srv import Trigger

        return self.call(client, Trigger.Request())

    def close(self) -> None:
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture()
def client() -> Iterator[Client]:
    c = Client()
    yield c
    c.close()


def test_protective_stop_shows_inactive_and_is_cleared_only_by_the_service(bridge: Any, client: Client) -> None:
    from lifecycle_msgs.msg import Transition

    node, backend = bridge
    assert client.state() == "active"
    stopped = client.trigger(client.stop)
    assert stopped.success and "PROTECTIVE_STOP" in stopped.message
    assert backend.snapshot("arm1").lifecycle_state == "PROTECTIVE_STOP"
    assert client.state() == "inactive"
    assert client.transition(Transition.TRANSITION_ACTIVATE) is False  # never by itself, nor by activate
    assert backend.snapshot("arm1").lifecycle_state == "PROTECTIVE_STOP"
    cleared = client.trigger(client.clear)
    assert cleared.success and "INACTIVE" in cleared.message
    assert client.state() == "inactive"
    assert client.transition(Transition.TRANSITION_ACTIVATE) is True
    assert backend.snapshot("arm1").lifecycle_state == "ACTIVE" and client.state() == "active"
    refused = [e for e in _drain(node) if e.kind == "lifecycle_refused"]
    assert refused and "clear_stop" in refused[0].fields["reason"]


def test_a_stop_the_controller_makes_by_itself_is_followed(bridge: Any, client: Client) -> None:
    _, backend = bridge
    assert client.state() == "active"
    loop = backend.loop
    backend.change_state("arm1", _transition("PROTECTIVE_STOP")).result(5.0)  # as the loop's own safety would
    deadline_state = ""
    for _ in range(50):
        deadline_state = client.state()
        if deadline_state == "inactive":
            break
    assert deadline_state == "inactive"
    assert loop.state(0).name == "PROTECTIVE_STOP"


def test_cleanup_and_shutdown_keep_the_run_going(bridge: Any, client: Client) -> None:
    from lifecycle_msgs.msg import Transition

    _, backend = bridge
    assert client.transition(Transition.TRANSITION_DEACTIVATE) is True
    assert client.transition(Transition.TRANSITION_CLEANUP) is True
    assert client.state() == "unconfigured" and backend.snapshot("arm1").lifecycle_state == "INACTIVE"
    assert client.transition(Transition.TRANSITION_CONFIGURE) is True
    assert client.transition(Transition.TRANSITION_ACTIVATE) is True
    assert client.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN) is True
    assert client.state() == "finalized"
    assert backend.snapshot("arm1").lifecycle_state == "INACTIVE"  # it holds; finalizing would end the run


@pytest.mark.parametrize("bridge", [LateBackend], indirect=True)
def test_an_answer_after_the_lifecycle_node_gave_up_is_dropped_and_the_node_serves_on(bridge: Any,
                                                                                      client: Client) -> None:
    from lifecycle_msgs.msg import Transition

    node, backend = bridge
    assert client.state() == "active"
    # the node waits 3 s, refuses and cancels its request; the run answers at 4 s, on the node's pipe loop
    assert client.transition(Transition.TRANSITION_DEACTIVATE) is False
    assert backend.late.wait(10.0)  # the run took the late request; its answer follows on the pipe
    refused = _await_event(node, "lifecycle_refused")  # the run reads the node's report after answering
    assert "did not apply it within" in refused.fields["reason"]
    # the node's process still serves requests through its pipe loop: it follows the late change and then
    # takes a new request end to end (a node whose loop died would answer neither)
    state = ""
    for _ in range(50):
        state = client.state()
        if state == "inactive":
            break
    assert state == "inactive" and backend.snapshot("arm1").lifecycle_state == "INACTIVE"
    assert client.transition(Transition.TRANSITION_ACTIVATE) is True
    assert backend.snapshot("arm1").lifecycle_state == "ACTIVE" and client.state() == "active"
    assert node.errors == []


def _idle_future() -> Any:
    """A future nobody completes: spinning until it times out just services the node."""
    from rclpy.task import Future

    return Future()


def _transition(name: str) -> Any:
    from testbed.bridge.controller_backend import Transition

    return Transition[name]


def test_the_run_going_away_fails_waiting_requests_and_leaves_cancelled_ones_alone() -> None:
    from multiprocessing import Pipe

    from testbed.errors import ControllerError
    from testbed.ros2.process import BackendProxy, _Link

    ours, theirs = Pipe()
    proxy = BackendProxy(_Link(ours))
    gave_up = proxy.change_state("arm1", _transition("DEACTIVATE"))
    waiting = proxy.change_state("arm1", _transition("ACTIVATE"))
    assert [theirs.recv()[:3] for _ in range(2)] == [("change_state", 1, "arm1"), ("change_state", 2, "arm1")]
    assert gave_up.cancel()  # the lifecycle node timed out on it
    proxy.fail_all("the run's process is gone")  # as the node's pipe loop does when the run's end closes
    assert gave_up.cancelled()
    with pytest.raises(ControllerError, match="the run's process is gone"):
        waiting.result(0)
    ours.close()
    theirs.close()


def _await_event(node: Ros2Bridge, kind: str, timeout_s: float = 10.0) -> Any:
    """The first event of ``kind`` the node reports within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [e for e in _drain(node) if e.kind == kind]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event within {timeout_s} s")


def _drain(node: Ros2Bridge) -> list[Any]:
    out: list[Any] = []
    node.outbox.drain(out.append)
    return out
