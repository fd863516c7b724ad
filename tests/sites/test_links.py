"""Link figures, the delay law drawn from a seeded generator, in-order delivery and lockstep arrival steps."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.errors import ScenarioError
from testbed.sites.links import (
    MSS_BYTES,
    RTO_MAX_S,
    TCP_RETRIES,
    DelayModel,
    LinkDirection,
    LinkSpec,
    SimulatedLink,
    arrival_step,
)

SAMPLES = 200_000


def _erlang4_quantile(q: float) -> float:
    """Quantile of Gamma(shape=4, scale=1) (an Erlang law: closed-form CDF), by bisection."""
    def cdf(x: float) -> float:
        return 1.0 - math.exp(-x) * sum(x ** n / math.factorial(n) for n in range(4))
    low, high = 0.0, 100.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < q else (low, mid)
    return (low + high) / 2


# ----- LinkSpec ------------------------------------------------------------------------------


def test_link_builds_from_a_mapping_with_the_launch_file_keys() -> None:
    link = LinkSpec.from_mapping({"rtt_ms": 107, "jitter_ms": 2, "loss": 0.001, "bandwidth_mbps": 100,
                                  "source": "a table"})
    assert link == LinkSpec(107.0, 2.0, 0.001, 100.0, "a table")
    assert isinstance(link.rtt_ms, float)
    assert LinkSpec.from_mapping({"rtt_ms": 30}) == LinkSpec(30.0)


@pytest.mark.parametrize(("data", "message"), [
    ({"rtt_ms": -1}, r"sites.links\[0\] rtt_ms: expected a round-trip time in ms, >= 0, got -1"),
    ({"rtt_ms": 10, "jitter_ms": -0.5}, r"jitter_ms: expected a standard deviation in ms, >= 0, got -0.5"),
    ({"rtt_ms": 10, "loss": 1.0}, r"loss: expected a probability per segment in \[0, 1\), got 1.0"),
    ({"rtt_ms": 10, "loss": -0.1}, r"loss: expected a probability"),
    ({"rtt_ms": 10, "bandwidth_mbps": 0}, r"bandwidth_mbps: expected a rate in Mbit/s, > 0, or null"),
    ({"rtt_ms": "fast"}, r"rtt_ms: expected a round-trip time in ms, >= 0, got 'fast'"),
    ({"rtt_ms": True}, r"rtt_ms: expected a round-trip time"),
    ({"rtt_ms": float("nan")}, r"rtt_ms: expected a round-trip time"),
    ({"rtt_ms": 10, "source": 3}, r"source: expected text naming where the figures come from, got int"),
    ({"rtt": 10}, r"sites.links\[0\]: unknown field 'rtt'. Did you mean 'rtt_ms'\? \(known: rtt_ms, jitter_ms"),
    ({"jitter_ms": 1}, r"sites.links\[0\]: rtt_ms is required"),
])
def test_link_mapping_out_of_range_is_refused_with_where_and_what(data: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        LinkSpec.from_mapping(data, where="sites.links[0]")


def test_link_constructed_directly_is_validated_too() -> None:
    with pytest.raises(ScenarioError, match=r"link loss: expected a probability"):
        LinkSpec(rtt_ms=10, loss=2)


def test_link_mapping_must_be_a_mapping() -> None:
    with pytest.raises(ScenarioError, match=r"here: expected a mapping of rtt_ms, .*got list"):
        LinkSpec.from_mapping([1, 2], where="here")  # type: ignore[arg-type]


def test_retransmission_timeout_is_rtt_plus_the_linux_floor() -> None:
    assert LinkSpec(rtt_ms=107, jitter_ms=2).rto_s == pytest.approx(0.307)
    assert LinkSpec(rtt_ms=100, jitter_ms=50).rto_s == pytest.approx(0.1 + 4 * math.sqrt(2) * 0.05)


# ----- DelayModel ----------------------------------------------------------------------------


def test_same_seed_gives_the_same_delays_and_another_seed_others() -> None:
    model = DelayModel(LinkSpec(rtt_ms=120, jitter_ms=5, loss=0.05, bandwidth_mbps=50))
    a, b, c = (np.random.default_rng(seed) for seed in (7, 7, 8))
    first = [model.one_way_s(a, 30_000) for _ in range(500)]
    again = [model.one_way_s(b, 30_000) for _ in range(500)]
    other = [model.one_way_s(c, 30_000) for _ in range(500)]
    assert first == again
    assert first != other


def test_without_jitter_or_loss_the_delay_is_half_the_rtt_plus_serialization() -> None:
    model = DelayModel(LinkSpec(rtt_ms=60, bandwidth_mbps=8))
    rng = np.random.default_rng(0)
    assert model.one_way_s(rng, 0) == pytest.approx(0.030)
    assert model.one_way_s(rng, 10_000) == pytest.approx(0.030 + 10_000 * 8 / 8e6)
    assert DelayModel(LinkSpec(rtt_ms=60)).serialization_s(10**9) == 0.0


def test_jitter_keeps_the_mean_at_half_the_rtt_with_the_configured_spread() -> None:
    jitter_ms = 4.0
    model = DelayModel(LinkSpec(rtt_ms=120, jitter_ms=jitter_ms))
    ms = model.sample_one_way_s(np.random.default_rng(1), 100, SAMPLES) * 1000
    standard_error = jitter_ms / math.sqrt(SAMPLES)
    assert abs(ms.mean() - 60.0) < 5 * standard_error
    assert ms.std() == pytest.approx(jitter_ms, rel=0.02)
    assert ms.min() >= 60.0 - 2 * jitter_ms  # the law's floor: no delay below propagation less 2 sigma


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_jitter_percentiles_follow_the_shifted_gamma(q: float) -> None:
    jitter_ms = 4.0
    model = DelayModel(LinkSpec(rtt_ms=120, jitter_ms=jitter_ms))
    ms = model.sample_one_way_s(np.random.default_rng(2), 100, SAMPLES) * 1000
    expected = 60.0 + (_erlang4_quantile(q) - 4.0) * jitter_ms / 2
    assert np.quantile(ms, q) == pytest.approx(expected, abs=0.1)


def test_one_way_draws_and_batches_follow_the_same_law() -> None:
    model = DelayModel(LinkSpec(rtt_ms=80, jitter_ms=3))
    rng = np.random.default_rng(3)
    singles = np.array([model.one_way_s(rng, 100) for _ in range(20_000)]) * 1000
    assert singles.mean() == pytest.approx(40.0, abs=0.1)
    assert np.median(singles) == pytest.approx(40.0 + (_erlang4_quantile(0.5) - 4.0) * 1.5, abs=0.15)


def test_jitter_wider_than_the_floor_never_gives_a_negative_delay() -> None:
    model = DelayModel(LinkSpec(rtt_ms=2, jitter_ms=5))
    assert model.sample_one_way_s(np.random.default_rng(4), 100, 50_000).min() >= 0.0


def test_a_lost_segment_costs_a_retransmission_timeout_and_repeated_losses_back_off() -> None:
    link = LinkSpec(rtt_ms=100, loss=0.1)
    extra_s = DelayModel(link).sample_one_way_s(np.random.default_rng(5), 100, SAMPLES) - 0.05
    delayed = extra_s[extra_s > 1e-9]
    assert len(delayed) / SAMPLES == pytest.approx(0.1, rel=0.05)
    # one loss: one RTO; two in a row: RTO + 2 RTO (RFC 6298 exponential backoff)
    assert np.mean(np.isclose(delayed, link.rto_s)) == pytest.approx(0.9, abs=0.01)
    assert np.mean(np.isclose(delayed, 3 * link.rto_s)) == pytest.approx(0.09, abs=0.01)


def test_a_larger_message_has_more_segments_to_lose() -> None:
    loss = 0.01
    model = DelayModel(LinkSpec(rtt_ms=100, loss=loss))
    segments = 20
    extra_s = model.sample_one_way_s(np.random.default_rng(6), segments * MSS_BYTES, SAMPLES) - 0.05
    assert np.mean(extra_s > 1e-9) == pytest.approx(1 - (1 - loss) ** segments, rel=0.05)


def test_heavy_loss_waits_at_most_as_long_as_tcp_keeps_retrying() -> None:
    link = LinkSpec(rtt_ms=100, loss=0.99)
    delays_s = DelayModel(link).sample_one_way_s(np.random.default_rng(14), 100, 1_000)
    longest_s = 0.05 + sum(min(link.rto_s * 2 ** i, RTO_MAX_S) for i in range(TCP_RETRIES))
    assert np.isfinite(delays_s).all() and delays_s.max() <= longest_s + 1e-9


def test_the_model_takes_any_object_with_the_link_figures_and_checks_them() -> None:
    figures = SimpleNamespace(rtt_ms=60, jitter_ms=0.0, loss=0.0, bandwidth_mbps=None, source="profile")
    model = DelayModel(figures)  # type: ignore[arg-type]
    assert model.link == LinkSpec(60.0, source="profile")
    assert model.one_way_s(np.random.default_rng(0), 100) == pytest.approx(0.030)
    with pytest.raises(ScenarioError, match=r"link rtt_ms: expected a round-trip time"):
        DelayModel(SimpleNamespace(rtt_ms=-5, jitter_ms=0.0, loss=0.0, bandwidth_mbps=None))  # type: ignore[arg-type]


# ----- LinkDirection and SimulatedLink -------------------------------------------------------


def test_a_direction_never_lets_a_later_message_overtake() -> None:
    direction = LinkDirection(DelayModel(LinkSpec(rtt_ms=20, jitter_ms=8, loss=0.05)), np.random.default_rng(7))
    deliveries = [direction.deliver_at(i * 0.001, 200) for i in range(5_000)]
    assert deliveries == sorted(deliveries)


def test_back_to_back_messages_leave_at_the_link_bandwidth() -> None:
    direction = LinkDirection(DelayModel(LinkSpec(rtt_ms=0, bandwidth_mbps=8)), np.random.default_rng(8))
    deliveries = [direction.deliver_at(0.0, 100_000) for _ in range(10)]  # all handed over at once
    assert deliveries == pytest.approx([0.1 * (i + 1) for i in range(10)])


def test_simulated_exchange_adds_both_directions_and_gives_the_arrival_step() -> None:
    link = SimulatedLink(LinkSpec(rtt_ms=100, bandwidth_mbps=8), np.random.default_rng(9))
    exchange = link.exchange(request_step=40, dt_s=0.01, request_bytes=1_000, reply_bytes=2_000, compute_s=0.005)
    assert exchange.delay_s == pytest.approx(0.100 + 0.001 + 0.002 + 0.005)
    assert exchange.arrival_step == 40 + 11


def test_simulated_link_is_reproducible_from_the_run_seed() -> None:
    def run(seed: int) -> list[tuple[float, int]]:
        link = SimulatedLink(LinkSpec(rtt_ms=107, jitter_ms=2, loss=0.01, bandwidth_mbps=100),
                             np.random.default_rng(seed))
        return [(e.delay_s, e.arrival_step) for e in (link.exchange(k * 5, 0.002, 28_000, 600) for k in range(300))]
    assert run(11) == run(11)
    assert run(11) != run(12)


def test_simulated_replies_to_successive_requests_arrive_in_order() -> None:
    link = SimulatedLink(LinkSpec(rtt_ms=107, jitter_ms=10, loss=0.02), np.random.default_rng(13))
    steps = [link.exchange(k, 0.001, 28_000, 600).arrival_step for k in range(0, 3000, 3)]
    assert steps == sorted(steps)


# ----- arrival_step --------------------------------------------------------------------------


@pytest.mark.parametrize("dt_s", [0.001, 0.002, 0.01, 0.1, 1 / 60, 1 / 30, 0.05])
@pytest.mark.parametrize("n", [1, 3, 7, 60, 107])
def test_a_delay_of_exactly_n_steps_arrives_n_steps_later(dt_s: float, n: int) -> None:
    assert arrival_step(10, n * dt_s, dt_s) == 10 + n
    assert arrival_step(10, sum([dt_s] * n), dt_s) == 10 + n  # the same delay, added up step by step


def test_arrival_step_rounds_up_a_delay_that_is_not_a_whole_number_of_steps() -> None:
    assert arrival_step(0, 0.07, 0.01) == 7  # 0.07 / 0.01 == 7.000000000000001 in floats
    assert arrival_step(0, 0.0701, 0.01) == 8
    assert arrival_step(5, 0.0, 0.01) == 5
    assert arrival_step(5, 1e-6, 0.01) == 6


def test_float_noise_of_a_sim_time_difference_is_not_a_step() -> None:
    dt_s = 0.001
    sent_s = 1_000_003 * dt_s
    delay_s = (sent_s + 3 * dt_s) - sent_s  # 0.0029999999 or 0.0030000001 depending on rounding
    assert arrival_step(1_000_003, delay_s, dt_s) == 1_000_006


@given(n=st.integers(1, 100_000), dt_s=st.floats(1e-5, 1.0), k=st.integers(0, 10**6))
def test_arrival_step_is_exact_on_multiples_and_later_past_them(n: int, dt_s: float, k: int) -> None:
    assert arrival_step(k, n * dt_s, dt_s) == k + n
    assert arrival_step(k, n * dt_s * (1 + 1e-6), dt_s) == k + n + 1


@pytest.mark.parametrize(("delay_s", "dt_s", "message"), [
    (-0.001, 0.01, "delay_s must be a finite number of seconds >= 0"),
    (float("inf"), 0.01, "delay_s must be"),
    (0.1, 0.0, "dt_s must be a positive number of seconds"),
    (0.1, float("nan"), "dt_s must be"),
])
def test_arrival_step_refuses_impossible_times(delay_s: float, dt_s: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        arrival_step(0, delay_s, dt_s)
