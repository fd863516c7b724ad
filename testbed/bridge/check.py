"""``testbed policy check``: call a policy server the way a run would and grade it.

Checks: health, spec, reset, a few hundred acts over the stream and unary paths
with realistic observations made from the spec, malformed requests (a byte count
that does not fit the shape, a NaN state, a missing key) that must be refused
with ``INVALID_ARGUMENT``, and the load report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from testbed.bridge import codec
from testbed.bridge.client import GrpcActionSource, parse_endpoint
from testbed.bridge.generated import common_pb2, policy_pb2, policy_pb2_grpc
from testbed.bridge.reference import sample_observation
from testbed.errors import BridgeConfigError, TestbedError
from testbed.policies.protocol import PolicySpec


@dataclass(frozen=True)
class CheckRow:
    """One graded check."""

    name: str
    passed: bool
    detail: str


@dataclass
class CheckReport:
    """All checks of one server, with act latencies in milliseconds per path."""

    endpoint: str
    rows: list[CheckRow] = field(default_factory=list)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every check passed (and there was at least one)."""
        return bool(self.rows) and all(row.passed for row in self.rows)


def _percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    p50, p99 = np.percentile(values, [50, 99])
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(values)} calls)"


def format_report(report: CheckReport) -> str:
    """A plain-text pass/fail table with latency percentiles."""
    width = max([len(row.name) for row in report.rows] + [10])
    lines = [f"policy check {report.endpoint}", f"{'check':<{width}}  result  detail"]
    for row in report.rows:
        lines.append(f"{row.name:<{width}}  {'PASS' if row.passed else 'FAIL':<6}  {row.detail}")
    for path, values in report.latency_ms.items():
        lines.append(f"latency {path}: {_percentiles(values)}")
    lines.append("RESULT: " + ("PASS" if report.passed else "FAIL"))
    return "\n".join(lines)


def _acts(source: GrpcActionSource, spec: PolicySpec, n: int, deadline_s: float,
          rng: np.random.Generator) -> tuple[CheckRow | None, list[float]]:
    latencies: list[float] = []
    for step in range(n):
        obs = sample_observation(spec, rng)
        start = time.perf_counter()
        source.submit(obs, step)
        chunk = source.result(deadline_s)
        latencies.append((time.perf_counter() - start) * 1e3)
        if chunk is None:
            return CheckRow("", False, f"no answer for step {step} within {deadline_s} s"), latencies
        if chunk.step != step:
            return CheckRow("", False, f"answer for step {chunk.step} when step {step} was asked"), latencies
    return None, latencies


def check_policy_server(
    endpoint: str,
    *,
    token: str | None = None,
    tls_ca: Path | None = None,
    acts: int = 300,
    deadline_s: float = 2.0,
) -> CheckReport:
    """Run every check against ``endpoint``; never raises for a misbehaving server.

    Raises:
        BridgeConfigError: the endpoint is malformed or ``tls_ca`` cannot be read.
    """
    report = CheckReport(endpoint)
    target, tls = parse_endpoint(endpoint)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    if tls or tls_ca is not None:
        try:
            root = Path(tls_ca).read_bytes() if tls_ca else None
        except OSError as exc:
            raise BridgeConfigError(f"policy check --tls-ca {tls_ca}: cannot read it ({exc.strerror or exc})") from exc
        creds = grpc.ssl_channel_credentials(root_certificates=root)
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    rng = np.random.default_rng(0)

    def run(name: str, check: Callable[[], str]) -> bool:
        try:
            report.rows.append(CheckRow(name, True, check()))
        except (TestbedError, grpc.RpcError, AssertionError) as exc:
            detail = str(exc) if not isinstance(exc, grpc.RpcError) else f"{exc.code().name}: {exc.details()}"
            report.rows.append(CheckRow(name, False, detail or type(exc).__name__))
            return False
        return True

    with channel, GrpcActionSource(endpoint, token=token, tls_ca=tls_ca, deadline_s=deadline_s) as stream, \
            GrpcActionSource(endpoint, token=token, tls_ca=tls_ca, deadline_s=deadline_s, mode="unary") as unary:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)

        def health() -> str:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="testbed.v1.PolicyService"), timeout=deadline_s
            )
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            if answer.status != health_pb2.HealthCheckResponse.SERVING:
                raise AssertionError(f"health is {status}")
            return status

        run("health", health)
        specs: list[PolicySpec] = []

        def spec() -> str:
            specs.append(stream.spec())
            s = specs[0]
            keys = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in s.observation.items())
            return (f"{s.model_name} {s.model_version}: {s.action_kind.value} dim {s.action_dim} "
                    f"chunk {s.chunk_size} at {s.control_hz:g} Hz; obs {keys}")

        if not run("spec", spec):
            return report
        policy_spec = specs[0]

        def reset() -> str:
            stream.reset(0)
            unary.reset(0)
            return "episode 0"

        run("reset", reset)
        for name, source, n in (("act stream", stream, acts), ("act unary", unary, max(20, acts // 3))):
            def act(source: GrpcActionSource = source, n: int = n, name: str = name) -> str:
                row, latencies = _acts(source, policy_spec, n, deadline_s, rng)
                report.latency_ms[name.split()[1]] = latencies
                if row is not None:
                    raise AssertionError(row.detail)
                return f"{n} chunks, aligned and valid"

            run(name, act)

        good = sample_observation(policy_spec, rng)
        first_key = next(iter(policy_spec.observation))
        float_keys = [k for k, v in policy_spec.observation.items() if np.dtype(v.dtype).kind == "f"]

        def refused(msg: common_pb2.Observation, what: str) -> str:
            try:
                stub.Act(msg, timeout=deadline_s, metadata=metadata)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise AssertionError(f"{what}: expected INVALID_ARGUMENT, got {exc.code().name}") from exc
                return f"INVALID_ARGUMENT: {exc.details()}"
            raise AssertionError(f"{what}: the server accepted it")

        def truncated() -> str:
            msg = codec.encode_observation(good, episode=0, step=0)
            msg.tensors[first_key].data = msg.tensors[first_key].data[:-1]
            return refused(msg, "a tensor one byte short")

        def missing() -> str:
            msg = codec.encode_observation(good, episode=0, step=0)
            del msg.tensors[first_key]
            return refused(msg, f"an observation without {first_key!r}")

        run("malformed: size mismatch", truncated)
        run("malformed: missing key", missing)
        if float_keys:
            def nan() -> str:
                bad = dict(good)
                bad[float_keys[0]] = np.full_like(good[float_keys[0]], np.nan)
                return refused(codec.encode_observation(bad, episode=0, step=0), f"NaN in {float_keys[0]!r}")

            run("malformed: NaN", nan)

        def stats() -> str:
            s = stub.GetStats(policy_pb2.GetStatsRequest(), timeout=deadline_s, metadata=metadata)
            return (f"in_flight {s.in_flight}, requests {s.requests_total}, errors {s.errors_total}, "
                    f"sessions {s.sessions}, streams {s.streams_open}")

        run("stats", stats)
    return report
