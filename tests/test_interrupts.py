"""SIGTERM and Ctrl-C handlers: raised at once, or kept while held and raised on release."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from testbed import interrupts
from testbed.interrupts import Held, Terminated


@pytest.fixture
def term_handler() -> Iterator[None]:
    before = signal.signal(signal.SIGTERM, interrupts.raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_signal_outside_a_hold_raises_at_once(term_handler: None) -> None:
    with pytest.raises(Terminated, match="terminated by SIGTERM"):
        signal.raise_signal(signal.SIGTERM)


def test_a_held_signal_wakes_the_holder_and_is_raised_on_release(term_handler: None) -> None:
    woken: list[int] = []
    assert interrupts.hold(lambda: woken.append(1))
    signal.raise_signal(signal.SIGTERM)
    interrupts.raise_interrupted(signal.SIGINT, None)  # a second signal: the first says why
    assert woken == [1, 1]
    with pytest.raises(Terminated, match="terminated by SIGTERM"):
        interrupts.release()
    interrupts.release()  # nothing kept any more


def test_only_the_outermost_hold_releases(term_handler: None) -> None:
    reached: list[str] = []
    with pytest.raises(Terminated), Held():
        with Held():
            signal.raise_signal(signal.SIGTERM)
        reached.append("after the inner block")  # its end raised nothing
    assert reached == ["after the inner block"]


def test_a_hold_off_the_main_thread_holds_nothing() -> None:
    held: list[bool] = []
    worker = threading.Thread(target=lambda: held.append(interrupts.hold()))
    worker.start()
    worker.join()
    assert held == [False]
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_interrupted(signal.SIGINT, None)
