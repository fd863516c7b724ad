"""Controller lifecycle in the style of an RT-component (OpenRTM).

A component starts CREATED; ``initialize`` makes it alive (INACTIVE), ``activate``
lets it run (ACTIVE), ``deactivate`` pauses it, a fault sends it to ERROR, ``reset``
brings ERROR (or a safety stop) back to INACTIVE and ``finalize`` ends it. Safety
stops are states the component enters by itself and leaves only by ``reset``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from testbed.errors import ControllerError


class LifecycleState(enum.IntEnum):
    """States of a controller component; integer values index the loop's state array."""

    CREATED = 0
    INACTIVE = 1
    ACTIVE = 2
    PROTECTIVE_STOP = 3
    EMERGENCY_STOP = 4
    ERROR = 5
    FINALIZED = 6


_S = LifecycleState

#: transition name -> (states it is allowed from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[LifecycleState], LifecycleState]] = {
    "initialize": (frozenset({_S.CREATED}), _S.INACTIVE),
    "activate": (frozenset({_S.INACTIVE}), _S.ACTIVE),
    "deactivate": (frozenset({_S.ACTIVE}), _S.INACTIVE),
    "reset": (frozenset({_S.ERROR, _S.PROTECTIVE_STOP, _S.EMERGENCY_STOP}), _S.INACTIVE),
    "finalize": (frozenset({_S.CREATED, _S.INACTIVE, _S.ERROR}), _S.FINALIZED),
    "protective_stop": (frozenset({_S.ACTIVE}), _S.PROTECTIVE_STOP),
    "emergency_stop": (frozenset({_S.ACTIVE, _S.INACTIVE, _S.PROTECTIVE_STOP}), _S.EMERGENCY_STOP),
    "fault": (frozenset({_S.INACTIVE, _S.ACTIVE, _S.PROTECTIVE_STOP, _S.EMERGENCY_STOP}), _S.ERROR),
}

#: states in which a stop request is already satisfied (a no-op rather than a refusal)
_ALREADY_STOPPED: dict[str, frozenset[LifecycleState]] = {
    "protective_stop": frozenset({_S.PROTECTIVE_STOP, _S.EMERGENCY_STOP, _S.ERROR}),
    "emergency_stop": frozenset({_S.EMERGENCY_STOP, _S.ERROR}),
    "fault": frozenset({_S.ERROR}),
}

StateListener = Callable[["Component", LifecycleState, LifecycleState, str, str], None]


class Component:
    """An RT-component style state machine with overridable hooks.

    Subclasses override the ``on_*`` hooks; each transition method checks that it is
    allowed, runs its hook and changes state. A hook that raises during a transition or
    in ``execute`` sends the component to ERROR (``on_aborting`` then ``on_error``).

    Args:
        name: shown in error messages and events.
        listener: called as ``listener(component, old, new, transition, reason)`` after every change.
    """

    def __init__(self, name: str, listener: StateListener | None = None) -> None:
        self.name = name
        self._state = LifecycleState.CREATED
        self._listener = listener
        self.last_error: str | None = None

    @property
    def state(self) -> LifecycleState:
        """The current lifecycle state."""
        return self._state

    # hooks: no-ops unless a subclass overrides them
    def on_initialize(self) -> None:
        """Called on ``initialize`` (CREATED -> INACTIVE)."""

    def on_activated(self) -> None:
        """Called on ``activate`` (INACTIVE -> ACTIVE)."""

    def on_execute(self) -> None:
        """Called every cycle while ACTIVE by the execution context."""

    def on_deactivated(self) -> None:
        """Called on ``deactivate`` (ACTIVE -> INACTIVE)."""

    def on_aborting(self) -> None:
        """Called once when a fault is about to send the component to ERROR."""

    def on_error(self) -> None:
        """Called on entering ERROR, and every cycle while in ERROR."""

    def on_reset(self) -> None:
        """Called on ``reset`` (ERROR or a safety stop -> INACTIVE)."""

    def on_finalize(self) -> None:
        """Called on ``finalize`` (-> FINALIZED)."""

    def on_stop(self, kind: str, reason: str) -> None:
        """Called when a protective or emergency stop is entered."""

    # transitions
    def initialize(self) -> None:
        """CREATED -> INACTIVE, running ``on_initialize``."""
        self._run("initialize", self.on_initialize)

    def activate(self) -> None:
        """INACTIVE -> ACTIVE, running ``on_activated``."""
        self._run("activate", self.on_activated)

    def deactivate(self) -> None:
        """ACTIVE -> INACTIVE, running ``on_deactivated``."""
        self._run("deactivate", self.on_deactivated)

    def reset(self) -> None:
        """ERROR, PROTECTIVE_STOP or EMERGENCY_STOP -> INACTIVE, running ``on_reset``."""
        self._run("reset", self.on_reset)

    def finalize(self) -> None:
        """CREATED, INACTIVE or ERROR -> FINALIZED, running ``on_finalize``."""
        self._run("finalize", self.on_finalize)

    def protective_stop(self, reason: str) -> bool:
        """Enter PROTECTIVE_STOP from ACTIVE; a no-op (False) if already stopped or in ERROR."""
        return self._stop("protective_stop", reason)

    def emergency_stop(self, reason: str) -> bool:
        """Enter EMERGENCY_STOP; a no-op (False) if already in EMERGENCY_STOP or ERROR."""
        return self._stop("emergency_stop", reason)

    def fault(self, reason: str) -> bool:
        """Enter ERROR by itself (``on_aborting``, then ``on_error``); a no-op (False) if already there."""
        if self._state in _ALREADY_STOPPED["fault"]:
            return False
        self._check("fault")
        self.last_error = reason
        old = self._state
        try:
            self.on_aborting()
        finally:
            self._state = LifecycleState.ERROR
            self._notify(old, "fault", reason)
        self.on_error()
        return True

    def execute(self) -> None:
        """One cycle: ``on_execute`` if ACTIVE, ``on_error`` if in ERROR; a raising hook is a fault."""
        if self._state is LifecycleState.ACTIVE:
            try:
                self.on_execute()
            except Exception as exc:  # a hook failure is a component fault, not a crash of the loop
                self.fault(f"on_execute raised {type(exc).__name__}: {exc}")
        elif self._state is LifecycleState.ERROR:
            self.on_error()

    def _check(self, transition: str) -> LifecycleState:
        allowed, target = TRANSITIONS[transition]
        if self._state not in allowed:
            names = ", ".join(sorted(s.name for s in allowed))
            raise ControllerError(
                f"controller {self.name!r}: transition '{transition}' refused in state {self._state.name} "
                f"(allowed from: {names})"
            )
        return target

    def _run(self, transition: str, hook: Callable[[], None]) -> None:
        target = self._check(transition)
        old = self._state
        try:
            hook()
        except Exception as exc:
            self.fault(f"{hook.__name__} raised {type(exc).__name__}: {exc}")
            raise ControllerError(
                f"controller {self.name!r}: {hook.__name__} failed during '{transition}' "
                f"({type(exc).__name__}: {exc}); the component is now in ERROR"
            ) from exc
        self._state = target
        if transition == "reset":
            self.last_error = None
        self._notify(old, transition, "")

    def _stop(self, transition: str, reason: str) -> bool:
        if self._state in _ALREADY_STOPPED[transition]:
            return False
        target = self._check(transition)
        old = self._state
        self._state = target
        self.last_error = reason  # why it stopped, until an explicit reset
        self._notify(old, transition, reason)
        self.on_stop(transition, reason)
        return True

    def _notify(self, old: LifecycleState, transition: str, reason: str) -> None:
        if self._listener is not None:
            self._listener(self, old, self._state, transition, reason)
