"""Links between sites: what a message pays to cross one, drawn reproducibly from a run's seeded generator.

A ``LinkSpec`` holds a link's published figures (round-trip time, jitter, loss, bandwidth and where they
come from). A ``DelayModel`` turns them into one-way delays; a ``LinkDirection`` is one direction of a
link as TCP delivers it: first in, first out, at the link's bandwidth. The same ``LinkDirection`` paces
simulated time in lockstep runs (``SimulatedLink``, ``arrival_step``) and wall-clock time in the relay
that real-time runs put in front of a policy (``testbed.sites.relay``).

The one-way delay of a message of ``n`` bytes on an idle link is::

    rtt/2 + J + n*8/bandwidth + R

* ``J``, the jitter, is a gamma variable of shape 4 shifted to mean 0 with standard deviation
  ``jitter_ms``: ``Gamma(k=4, scale=jitter/2) - 2*jitter``. Measured path delays have a hard floor
  (propagation) and a right tail (queueing), so a right-skewed law bounded below fits them better than a
  normal, and keeping the mean at 0 keeps the mean round trip equal to ``rtt_ms``, the figure published
  tables give. The floor is ``rtt/2 - 2*jitter``; a delay is never below 0 (only reachable when
  ``jitter_ms > rtt_ms / 4``, which then raises the mean a little).
* ``R`` is loss as TCP sees it: a message is cut into segments of ``MSS_BYTES``; each is lost
  independently with probability ``loss``; a lost segment is sent again after the retransmission
  timeout, which doubles for each further loss of the same segment (RFC 6298 §5.5), capped at
  ``RTO_MAX_S`` per wait and at ``TCP_RETRIES`` losses in a row (where Linux would give the connection
  up). The message arrives when its slowest segment does. The timeout follows
  Linux's form of RFC 6298 §2: ``RTO = RTT + max(200 ms, 4*RTTVAR)`` (``tcp_set_rto`` with
  ``TCP_RTO_MIN`` = 200 ms; the RFC's 1 s minimum is relaxed there), with ``RTTVAR`` taken as the
  standard deviation of the round trip (``sqrt(2) * jitter``). Fast retransmit and tail-loss probes,
  which can recover sooner, are not modelled: this is the delay a small request/reply exchange, with
  too few segments in flight for duplicate acknowledgements, tends to see.
* Nothing overtakes: a ``LinkDirection`` delivers in the order it was given, so one late segment
  holds back everything behind it (head-of-line blocking, as on one TCP connection).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from testbed.errors import ScenarioError

MSS_BYTES = 1448  # TCP payload per segment: 1500-byte Ethernet MTU less IP, TCP and timestamp headers
RTO_MIN_S = 0.200  # Linux TCP_RTO_MIN (HZ/5)
RTO_MAX_S = 120.0  # Linux TCP_RTO_MAX
TCP_RETRIES = 15  # Linux net.ipv4.tcp_retries2: losses in a row of one segment before the connection is dropped
JITTER_SHAPE = 4.0  # gamma shape: skewness 2/sqrt(4) = 1
LINK_FIELDS = ("rtt_ms", "jitter_ms", "loss", "bandwidth_mbps", "source")


class LinkFigures(Protocol):
    """Anything with a link's figures: a ``LinkSpec`` here, or the sites profile's model of the same fields."""

    @property
    def rtt_ms(self) -> float: ...
    @property
    def jitter_ms(self) -> float: ...
    @property
    def loss(self) -> float: ...
    @property
    def bandwidth_mbps(self) -> float | None: ...


@dataclass(frozen=True)
class LinkSpec:
    """One link between two sites, the same in both directions.

    Args:
        rtt_ms: mean round-trip time (ms), >= 0.
        jitter_ms: standard deviation of each one-way delay (ms), >= 0.
        loss: probability that a TCP segment is lost, in [0, 1); past a few percent TCP mostly waits.
        bandwidth_mbps: bottleneck rate of each direction (Mbit/s), > 0; None for no limit.
        source: where the figures come from (a publication, a measurement), for the audit trail.

    Raises:
        ScenarioError: a field is out of range or of the wrong type.
    """

    rtt_ms: float
    jitter_ms: float = 0.0
    loss: float = 0.0
    bandwidth_mbps: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for name, value in zip(LINK_FIELDS, _checked("link", self._values()), strict=True):
            object.__setattr__(self, name, value)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], where: str = "link") -> LinkSpec:
        """Build a link from a plain mapping with the launch file's keys (``rtt_ms`` required).

        Args:
            data: ``rtt_ms``, and optionally ``jitter_ms``, ``loss``, ``bandwidth_mbps``, ``source``.
            where: where the mapping came from, to start error messages (e.g. ``sites.links[0]``).

        Raises:
            ScenarioError: a key is unknown or missing, or a value is out of range.
        """
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{where}: expected a mapping of {', '.join(LINK_FIELDS)}, got {type(data).__name__}")
        for key in data:
            if key not in LINK_FIELDS:
                close = difflib.get_close_matches(str(key), LINK_FIELDS, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ScenarioError(f"{where}: unknown field '{key}'.{hint} (known: {', '.join(LINK_FIELDS)})")
        if "rtt_ms" not in data:
            raise ScenarioError(f"{where}: rtt_ms is required (the mean round-trip time in ms)")
        values = _checked(where, (data["rtt_ms"], data.get("jitter_ms", 0.0), data.get("loss", 0.0),
                                  data.get("bandwidth_mbps"), data.get("source", "")))
        return cls(*values)  # type: ignore[arg-type]

    @classmethod
    def of(cls, link: LinkFigures) -> LinkSpec:
        """``link`` as a checked ``LinkSpec`` (itself if it is one); its ``source`` is kept if it has one.

        Raises:
            ScenarioError: a figure is out of range.
        """
        if isinstance(link, LinkSpec):
            return link
        return cls(link.rtt_ms, link.jitter_ms, link.loss, link.bandwidth_mbps, str(getattr(link, "source", "")))

    @property
    def one_way_s(self) -> float:
        """Mean one-way propagation delay (s): half the round trip."""
        return self.rtt_ms / 2000.0

    @property
    def rto_s(self) -> float:
        """TCP's retransmission timeout on this link (s): ``RTT + max(200 ms, 4*RTTVAR)``, Linux's form."""
        rttvar_s = math.sqrt(2.0) * self.jitter_ms / 1000.0
        return self.rtt_ms / 1000.0 + max(RTO_MIN_S, 4.0 * rttvar_s)

    def _values(self) -> tuple[object, ...]:
        return (self.rtt_ms, self.jitter_ms, self.loss, self.bandwidth_mbps, self.source)


def _checked(where: str, values: tuple[object, ...]) -> tuple[float, float, float, float | None, str]:
    rtt_ms, jitter_ms, loss, bandwidth_mbps, source = values
    rtt = _number(where, "rtt_ms", rtt_ms, "a round-trip time in ms, >= 0")
    jitter = _number(where, "jitter_ms", jitter_ms, "a standard deviation in ms, >= 0")
    lost = _number(where, "loss", loss, "a probability per segment in [0, 1)")
    if rtt < 0:
        raise ScenarioError(f"{where} rtt_ms: expected a round-trip time in ms, >= 0, got {rtt_ms}")
    if jitter < 0:
        raise ScenarioError(f"{where} jitter_ms: expected a standard deviation in ms, >= 0, got {jitter_ms}")
    if not 0.0 <= lost < 1.0:
        raise ScenarioError(f"{where} loss: expected a probability per segment in [0, 1), got {loss} (0.01 is 1 %)")
    bandwidth: float | None = None
    if bandwidth_mbps is not None:
        bandwidth = _number(where, "bandwidth_mbps", bandwidth_mbps, "a rate in Mbit/s, > 0, or null for no limit")
        if bandwidth <= 0:
            raise ScenarioError(f"{where} bandwidth_mbps: expected a rate in Mbit/s, > 0, or null for no limit, "
                                f"got {bandwidth_mbps}")
    if not isinstance(source, str):
        raise ScenarioError(f"{where} source: expected text naming where the figures come from, "
                            f"got {type(source).__name__}")
    return rtt, jitter, lost, bandwidth, source


def _number(where: str, name: str, value: object, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where} {name}: expected {expected}, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ScenarioError(f"{where} {name}: expected {expected}, got {value!r}")
    return number


class DelayModel:
    """One-way delays of a link (see the module docstring for the law), drawn from a generator passed in.

    The model holds no generator and no state: the same generator state gives the same delays.

    Args:
        link: the link's figures (a ``LinkSpec`` or the sites profile's model of the same fields).

    Raises:
        ScenarioError: a figure is out of range.
    """

    def __init__(self, link: LinkFigures) -> None:
        link = self.link = LinkSpec.of(link)
        self._half_rtt_s = link.rtt_ms / 2000.0
        self._jitter_s = link.jitter_ms / 1000.0
        self._bits_per_s = None if link.bandwidth_mbps is None else link.bandwidth_mbps * 1e6
        self._rto_s = link.rto_s

    def serialization_s(self, size_bytes: int) -> float:
        """Time to put ``size_bytes`` on the link at its bandwidth (s); 0 without a limit."""
        if self._bits_per_s is None:
            return 0.0
        return size_bytes * 8.0 / self._bits_per_s

    def propagation_s(self, rng: np.random.Generator, size_bytes: int) -> float:
        """One draw of the delay after the last bit left (s): half the round trip, jitter, retransmissions.

        ``size_bytes`` sets how many segments can be lost.
        """
        return float(self._propagation(rng, size_bytes, 1)[0])

    def one_way_s(self, rng: np.random.Generator, size_bytes: int) -> float:
        """One draw of the one-way delay of a ``size_bytes`` message on an idle link (s)."""
        return self.serialization_s(size_bytes) + self.propagation_s(rng, size_bytes)

    def sample_one_way_s(self, rng: np.random.Generator, size_bytes: int, count: int) -> np.ndarray:
        """``count`` independent one-way delays (s) of ``size_bytes`` messages on an idle link, as ``(count,)``.

        The same law as ``count`` calls of ``one_way_s``, though not the same numbers.
        """
        return self._propagation(rng, size_bytes, count) + self.serialization_s(size_bytes)

    def _propagation(self, rng: np.random.Generator, size_bytes: int, count: int) -> np.ndarray:
        delay = np.full(count, self._half_rtt_s)
        if self._jitter_s > 0.0:
            scale = self._jitter_s / JITTER_SHAPE ** 0.5
            delay += rng.gamma(JITTER_SHAPE, scale, count) - JITTER_SHAPE * scale
            np.maximum(delay, 0.0, out=delay)
        if self.link.loss > 0.0:
            segments = max(1, math.ceil(size_bytes / MSS_BYTES))
            lost = rng.binomial(segments, self.link.loss, count)
            for index in np.flatnonzero(lost):
                # losses in a row of the worst-hit segment: the message waits for that one
                losses = min(int(rng.geometric(1.0 - self.link.loss, int(lost[index])).max()), TCP_RETRIES)
                delay[index] += self._retransmission_wait_s(losses)
        return delay

    def _retransmission_wait_s(self, losses: int) -> float:
        # each further loss of the same segment doubles the timeout (RFC 6298 §5.5), up to RTO_MAX_S
        return sum(min(self._rto_s * 2.0 ** attempt, RTO_MAX_S) for attempt in range(losses))


class LinkDirection:
    """One direction of a link as one TCP connection delivers it: in order, at the link's bandwidth.

    A message handed over at ``sent_s`` starts on the wire once the messages before it have left
    (serialization at the bandwidth), then takes a drawn propagation delay; it is delivered no earlier
    than the message before it. Times are in any one clock's seconds: simulated time in lockstep runs,
    ``time.monotonic()`` in the relay.

    Args:
        model: the link's delay model.
        rng: the generator this direction draws from (seeded by the run).
    """

    def __init__(self, model: DelayModel, rng: np.random.Generator) -> None:
        self.model = model
        self._rng = rng
        self._wire_free_s = -math.inf
        self._last_delivery_s = -math.inf

    def deliver_at(self, sent_s: float, size_bytes: int) -> float:
        """When a message of ``size_bytes`` handed over at ``sent_s`` arrives at the far end (same clock)."""
        start_s = max(sent_s, self._wire_free_s)
        self._wire_free_s = start_s + self.model.serialization_s(size_bytes)
        delivery_s = max(self._wire_free_s + self.model.propagation_s(self._rng, size_bytes), self._last_delivery_s)
        self._last_delivery_s = delivery_s
        return delivery_s


@dataclass(frozen=True)
class Exchange:
    """A request and its reply over a simulated link, in lockstep steps.

    Args:
        request_step: the control step the request was sent at.
        delay_s: from sending the request to the reply's arrival (s): the latency the controller saw.
        arrival_step: the first step at which the reply can be applied.
    """

    request_step: int
    delay_s: float
    arrival_step: int


class SimulatedLink:
    """A link in simulated time for lockstep runs: each request and its reply cross it, in order.

    Args:
        link: the link's figures (a ``LinkSpec`` or the sites profile's model of the same fields).
        rng: the run's seeded generator; both directions draw from it in call order, so the same
            seed and the same calls give the same delays.
    """

    def __init__(self, link: LinkFigures, rng: np.random.Generator) -> None:
        model = DelayModel(link)
        self.link = model.link
        self.up = LinkDirection(model, rng)
        self.down = LinkDirection(model, rng)

    def exchange(self, request_step: int, dt_s: float, request_bytes: int, reply_bytes: int,
                 compute_s: float = 0.0) -> Exchange:
        """Send a request at ``request_step``; return when its reply can be applied.

        Args:
            request_step: the control step the request leaves at (simulated time ``request_step * dt_s``).
            dt_s: the control period (s).
            request_bytes: size of the request on the wire (the encoded observation).
            reply_bytes: size of the reply on the wire (the encoded chunk).
            compute_s: the policy's own time between receiving the request and sending the reply (s).
        """
        if not dt_s > 0:
            raise ValueError(f"dt_s must be a positive number of seconds, got {dt_s}")
        sent_s = request_step * dt_s
        received_s = self.up.deliver_at(sent_s, request_bytes)
        replied_s = self.down.deliver_at(received_s + compute_s, reply_bytes)
        delay_s = replied_s - sent_s
        return Exchange(request_step, delay_s, arrival_step(request_step, delay_s, dt_s))


def arrival_step(request_step: int, delay_s: float, dt_s: float) -> int:
    """The first step at which something requested at ``request_step`` and delayed ``delay_s`` can apply.

    ``request_step + ceil(delay_s / dt_s)``, where a quotient within float rounding of a whole number
    counts as that number: a delay of exactly ``3 * dt_s`` gives ``request_step + 3``, not 4.

    Raises:
        ValueError: ``dt_s`` is not positive or ``delay_s`` is negative or not finite.
    """
    if not dt_s > 0 or not math.isfinite(dt_s):
        raise ValueError(f"dt_s must be a positive number of seconds, got {dt_s}")
    if not delay_s >= 0 or not math.isfinite(delay_s):
        raise ValueError(f"delay_s must be a finite number of seconds >= 0, got {delay_s}")
    steps = delay_s / dt_s
    nearest = round(steps)
    if abs(steps - nearest) <= 1e-9 * max(1.0, steps):
        return int(request_step) + int(nearest)
    return int(request_step) + math.ceil(steps)

