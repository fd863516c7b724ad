"""SIGTERM and Ctrl-C as exceptions in the main thread, held back while an asyncio loop turns there.

Python runs a signal handler between two bytecodes of the main thread, wherever it is. Raised
inside a turn of an asyncio loop, the exception can leave the loop broken: raised in ``call_soon``
it loses the callback that would wake a task, and raised in a callback gRPC's C core runs (its
poller calls back into Python on the loop's thread) it is printed as "Exception ignored" and lost,
so the run never hears of the signal. Code that turns a loop on the main thread therefore ``hold``s
the signals for the turn: the handlers keep the exception and wake the loop instead of raising, and
``release`` raises it once the turn is over, where unwinding is safe.

Only the command line installs these handlers; without them a signal behaves as Python's own
handlers make it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

__all__ = ["Held", "Terminated", "hold", "install", "raise_interrupted", "raise_terminated", "release"]

_MAIN_THREAD_ID = threading.main_thread().ident
_held = False
_wake: Callable[[], object] | None = None
_pending: KeyboardInterrupt | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so runs unwind and end their records with ``run_aborted``."""


def raise_terminated(signum: int, _frame: object) -> None:
    """SIGTERM handler: raise ``Terminated`` now, or when the signals are released."""
    _raise(Terminated(f"terminated by {signal.Signals(signum).name}"))


def raise_interrupted(_signum: int, _frame: object) -> None:
    """SIGINT handler: raise ``KeyboardInterrupt`` as Python's own does, now or when the signals are released."""
    _raise(KeyboardInterrupt())


def _raise(exc: KeyboardInterrupt) -> None:
    global _pending
    if not _held:
        raise exc
    if _pending is None:  # the first signal says why the run stops
        _pending = exc
    if _wake is not None:
        _wake()


def hold(wake: Callable[[], object] | None = None) -> bool:
    """Keep what the handlers raise until ``release``; ``wake`` is called when one comes meanwhile.

    Returns True if this call holds the signals (it is then the one to ``release``); False when
    not on the main thread (handlers never run elsewhere) or when an outer caller holds them.
    """
    global _held, _wake, _pending
    if _held or threading.get_ident() != _MAIN_THREAD_ID:
        return False
    # a signal kept while an earlier hold was being released, when a second one was raised at once instead,
    # is not raised again here
    _pending = None
    _held, _wake = True, wake
    return True


def release() -> None:
    """Let the handlers raise again, and raise what one kept while held."""
    global _held, _wake, _pending
    _held, _wake = False, None
    exc, _pending = _pending, None
    if exc is not None:
        raise exc


def install(*, ctrl_c: bool = True) -> None:
    """Use these handlers for SIGTERM and (unless ``ctrl_c`` is false, or SIGINT was ignored) for SIGINT.

    Only the main thread can set signal handlers; elsewhere this does nothing.
    """
    if threading.get_ident() != _MAIN_THREAD_ID:
        return
    signal.signal(signal.SIGTERM, raise_terminated)
    if ctrl_c and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, raise_interrupted)


class Held:
    """``hold`` for a ``with`` block: what a handler raised meanwhile is raised when the block ends."""

    __slots__ = ("_holding", "_wake")

    def __init__(self, wake: Callable[[], object] | None = None) -> None:
        self._wake = wake
        self._holding = False

    def __enter__(self) -> Held:
        self._holding = hold(self._wake)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._holding:
            self._holding = False
            release()
