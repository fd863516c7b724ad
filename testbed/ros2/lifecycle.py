"""Each robot's controller as a ROS 2 managed (lifecycle) node: ``<namespace>/<robot>/controller``.

The testbed's controllers follow OpenRTM's component lifecycle; ROS 2 tools drive them through
``lifecycle_msgs`` (``change_state``, ``get_state``, ``ros2 lifecycle set``). States map as:

=====================================  =========================================================
testbed (OpenRTM style)                ROS 2 lifecycle
=====================================  =========================================================
CREATED                                unconfigured
INACTIVE                               inactive
ACTIVE                                 active
PROTECTIVE_STOP, EMERGENCY_STOP        inactive (``clear_stop`` service, then ``activate``)
ERROR                                  errorprocessing -> unconfigured (``configure`` resets it)
FINALIZED                              finalized
=====================================  =========================================================

Transitions from ROS 2: ``activate``/``deactivate`` activate and deactivate the controller (it holds
while inactive); ``configure`` resets a controller that faulted (ERROR) and is otherwise a no-op;
``cleanup`` only changes the ROS 2 state (the controller stays INACTIVE, holding); ``shutdown``
deactivates the controller and finalizes the ROS 2 node (the testbed's own finalize would end the
run, since each episode restarts its controllers). A refused transition returns ``success: false``.

When the controller changes state by itself (a protective stop, a fault, a new episode that
restarts it), the node follows it through the same transitions, so ``get_state`` always tells the
controller's state. A protective or emergency stop is cleared only through the ``clear_stop``
service (``std_srvs/Trigger``), never by itself; ``protective_stop`` (also ``Trigger``) makes one.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, TimeoutError
from typing import Any, Protocol

from lifecycle_msgs.msg import State
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from std_srvs.srv import Trigger

from testbed.bridge.controller_backend import Transition
from testbed.errors import ControllerError

COMMAND_TIMEOUT_S = 2.0  # the run's side waits this long for the control loop to apply a request

#: testbed lifecycle state -> the ROS 2 primary state that shows it
ROS_STATE = {
    "CREATED": State.PRIMARY_STATE_UNCONFIGURED,
    "INACTIVE": State.PRIMARY_STATE_INACTIVE,
    "ACTIVE": State.PRIMARY_STATE_ACTIVE,
    "PROTECTIVE_STOP": State.PRIMARY_STATE_INACTIVE,
    "EMERGENCY_STOP": State.PRIMARY_STATE_INACTIVE,
    "ERROR": State.PRIMARY_STATE_UNCONFIGURED,
    "FINALIZED": State.PRIMARY_STATE_FINALIZED,
}
_STOPPED = ("PROTECTIVE_STOP", "EMERGENCY_STOP", "ERROR")
_SUCCESS, _FAILURE, _ERROR = (TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE,
                              TransitionCallbackReturn.ERROR)


class LifecycleBackend(Protocol):
    """What the lifecycle nodes need of the run's controller backend (in the node's process: ``BackendProxy``)."""

    def snapshot(self, robot: str) -> Any: ...  # with ``lifecycle_state`` (a LifecycleState name)
    def change_state(self, robot: str, transition: Transition) -> Future[str]: ...


class ControllerLifecycleNode(LifecycleNode):
    """The lifecycle node of one robot's controller.

    Args:
        robot: the robot's name.
        namespace, name: the node's namespace and name (``/cell/arm1``, ``controller``).
        backend: the run's controller backend as the node's process sees it (every request goes through its
            hand-off in the run's process).
        context: the run's rclpy context.
        report: called with (kind, fields) for events the run should record (refused requests).
        accept_requests: False for a node reachable beyond this machine (ROS 2 has no authentication here):
            it still follows and shows the controller's state, but refuses every transition asked from the
            graph and has no ``clear_stop`` or ``protective_stop`` service.
    """

    def __init__(self, robot: str, namespace: str, name: str, backend: LifecycleBackend, context: Any,
                 report: Callable[[str, dict[str, Any]], None], accept_requests: bool = True) -> None:
        super().__init__(name, namespace=namespace, context=context)
        self.robot = robot
        self.accept_requests = accept_requests
        self._backend = backend
        self._report = report
        self._following: str | None = None  # set while the node follows the controller instead of driving it
        self._last_seen = ""
        change_state = self._service_change_state
        original = change_state.callback
        change_state.callback = lambda req, resp: self._guarded_change_state(original, req, resp)
        if accept_requests:
            self.create_service(Trigger, "~/clear_stop", self._on_clear_stop)
            self.create_service(Trigger, "~/protective_stop", self._on_protective_stop)

    def ros2_state(self) -> str:
        """The ROS 2 lifecycle state's label (``active``, ``inactive``, ...)."""
        return str(self._state_machine.current_state[1])

    # ------------------------------------------------------------------ following the controller
    def follow(self) -> None:
        """Bring the ROS 2 state to the controller's, if the controller changed since the last call.

        Only changes of the controller count: a ``cleanup`` requested from ROS 2 (the controller
        stays INACTIVE) is not undone here.
        """
        state = self._backend.snapshot(self.robot).lifecycle_state
        if state == self._last_seen:
            return
        self._last_seen = state
        target = ROS_STATE.get(state)
        current = self._state_machine.current_state[0]
        if target is None or current == State.PRIMARY_STATE_FINALIZED:
            return
        for _ in range(3):  # at most unconfigured -> inactive -> active, or one error path
            current = self._state_machine.current_state[0]
            if current == target:
                return
            self._following = state
            try:
                self._step_towards(current, target, state)
            finally:
                self._following = None

    def _step_towards(self, current: int, target: int, state: str) -> None:
        p = State
        if state == "ERROR" and current in (p.PRIMARY_STATE_ACTIVE, p.PRIMARY_STATE_INACTIVE):
            # the callback answers ERROR: errorprocessing, then unconfigured, as a faulted ROS 2 node does
            (self.trigger_deactivate if current == p.PRIMARY_STATE_ACTIVE else self.trigger_cleanup)()
        elif current == p.PRIMARY_STATE_ACTIVE:
            self.trigger_deactivate()
        elif current == p.PRIMARY_STATE_INACTIVE:
            (self.trigger_activate if target == p.PRIMARY_STATE_ACTIVE else self.trigger_cleanup)()
        elif current == p.PRIMARY_STATE_UNCONFIGURED:
            self.trigger_configure()

    # ------------------------------------------------------------------ transitions
    def on_configure(self, state: Any) -> TransitionCallbackReturn:
        """unconfigured -> inactive: resets a controller in ERROR; otherwise nothing to do."""
        if self._following is not None:
            return _SUCCESS
        current = self._backend.snapshot(self.robot).lifecycle_state
        if current == "ERROR":
            return self._request(Transition.RESET, "configure")
        if current in ("PROTECTIVE_STOP", "EMERGENCY_STOP"):
            return self._refuse("configure", f"the controller is in {current}: call clear_stop first")
        return _SUCCESS

    def on_activate(self, state: Any) -> TransitionCallbackReturn:
        """inactive -> active: the controller accepts commands again."""
        if self._following is not None:
            return _SUCCESS
        current = self._backend.snapshot(self.robot).lifecycle_state
        if current == "ACTIVE":
            return _SUCCESS
        if current in _STOPPED:
            return self._refuse("activate", f"the controller is in {current}: call "
                                            f"{self.get_fully_qualified_name()}/clear_stop first")
        return self._request(Transition.ACTIVATE, "activate")

    def on_deactivate(self, state: Any) -> TransitionCallbackReturn:
        """active -> inactive: the controller holds where it is."""
        if self._following == "ERROR":
            return _ERROR
        if self._following is not None:
            return _SUCCESS
        if self._backend.snapshot(self.robot).lifecycle_state != "ACTIVE":
            return _SUCCESS
        return self._request(Transition.DEACTIVATE, "deactivate")

    def on_cleanup(self, state: Any) -> TransitionCallbackReturn:
        """inactive -> unconfigured: the ROS 2 side only; the controller stays INACTIVE, holding."""
        return _ERROR if self._following == "ERROR" else _SUCCESS

    def on_shutdown(self, state: Any) -> TransitionCallbackReturn:
        """-> finalized: the controller is deactivated (it holds) and the node stops following it."""
        if self._following is None and self._backend.snapshot(self.robot).lifecycle_state == "ACTIVE":
            self._request(Transition.DEACTIVATE, "shutdown")
        return _SUCCESS

    def on_error(self, state: Any) -> TransitionCallbackReturn:
        """errorprocessing -> unconfigured: the fault is the controller's; ``configure`` resets it."""
        return _SUCCESS

    # ------------------------------------------------------------------ services
    def _on_clear_stop(self, request: Any, response: Any) -> Any:
        current = self._backend.snapshot(self.robot).lifecycle_state
        if current not in _STOPPED:
            response.success = False
            response.message = f"robot {self.robot!r} is {current}: there is no stop to clear"
            return response
        ok = self._request(Transition.RESET, "clear_stop") == _SUCCESS
        response.success = ok
        response.message = (f"robot {self.robot!r}: {current} cleared, the controller is INACTIVE; activate it "
                            "to move again" if ok else f"robot {self.robot!r}: clearing {current} failed "
                            "(see the run's events)")
        self._last_seen = ""  # the ROS 2 state follows what the service did
        self.follow()
        return response

    def _on_protective_stop(self, request: Any, response: Any) -> Any:
        current = self._backend.snapshot(self.robot).lifecycle_state
        ok = current != "ACTIVE" or self._request(Transition.PROTECTIVE_STOP, "protective_stop") == _SUCCESS
        response.success = ok
        response.message = (f"robot {self.robot!r} is in PROTECTIVE_STOP" if current == "ACTIVE" and ok
                            else f"robot {self.robot!r} is {current}: it does not move")
        self._last_seen = ""
        self.follow()
        return response

    def _guarded_change_state(self, original: Callable[[Any, Any], Any], request: Any, response: Any) -> Any:
        if not self.accept_requests:
            label = request.transition.label or str(request.transition.id)
            self._report("lifecycle_refused", {"transition": label, "reason": "the node is reachable beyond this "
                                               "machine (ros2.discovery_range: subnet): it takes no requests"})
            response.success = False
            return response
        # rclpy raises out of the executor for a transition the state machine does not have from here
        try:
            return original(request, response)
        except Exception as exc:  # RCLError is not exported by rclpy; any failure means "refused"
            label = request.transition.label or str(request.transition.id)
            current = self._state_machine.current_state[1]
            self._report("lifecycle_refused", {"transition": label, "reason": f"no transition {label!r} from "
                                                                                 f"{current}: {exc}"})
            response.success = False
            return response

    def _request(self, transition: Transition, what: str) -> TransitionCallbackReturn:
        try:
            future = self._backend.change_state(self.robot, transition)
            future.result(COMMAND_TIMEOUT_S + 1.0)  # the run's side gives up after COMMAND_TIMEOUT_S and says so
        except TimeoutError:
            future.cancel()  # a late transition must not happen after the caller was told it failed
            return self._refuse(what, f"the control loop did not apply it within {COMMAND_TIMEOUT_S:g} s "
                                      "(is the run between episodes or over?)")
        except ControllerError as exc:
            return self._refuse(what, str(exc))
        self._last_seen = self._backend.snapshot(self.robot).lifecycle_state
        return _SUCCESS

    def _refuse(self, what: str, reason: str) -> TransitionCallbackReturn:
        self._report("lifecycle_refused", {"transition": what, "reason": reason})
        return _FAILURE
