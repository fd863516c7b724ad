"""The monitored TCP speed limit: the lowest of the limits a robot's controller settings ask for."""

import math

import pytest

from testbed.control.tcp_limit import monitored_tcp_limit_m_s


@pytest.mark.parametrize(("reduced", "explicit", "expected"), [
    (False, None, math.inf),   # nothing asked: no monitored limit (the model's tcp_speed_m_s is a capability)
    (True, None, 0.25),        # reduced-speed mode alone
    (False, 3.0, 3.0),         # an explicit limit alone
    (True, 3.0, 0.25),         # a looser explicit limit does not lift reduced-speed mode
    (True, 0.1, 0.1),          # a tighter explicit limit tightens it
])
def test_the_lowest_applicable_limit_is_monitored(reduced, explicit, expected):
    assert monitored_tcp_limit_m_s(reduced_speed=reduced, reduced_limit_m_s=0.25,
                                   tcp_speed_limit_m_s=explicit) == expected
