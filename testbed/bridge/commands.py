"""``testbed serve-policy`` (serve a policy over gRPC) and ``testbed policy check`` (conformance)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from testbed.errors import BridgeConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve-policy`` and ``policy check`` to the ``testbed`` command."""
    serve = subparsers.add_parser(
        "serve-policy",
        help="serve a policy over gRPC",
        description="Serve TARGET (pkg.module:Class, 'expert' or 'bc:PATH') on testbed.v1.PolicyService. "
        "Prints one line 'listening on HOST:PORT' once bound.",
    )
    serve.add_argument("target", help="pkg.module:Class, expert, or bc:PATH")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (beyond loopback needs a token)")
    serve.add_argument("--port", type=int, default=0, help="port, 0 for any free one")
    serve.add_argument("--token-env", metavar="VAR", help="environment variable holding the bearer token")
    serve.add_argument("--tls-cert", type=Path, help="PEM server certificate")
    serve.add_argument("--tls-key", type=Path, help="PEM server private key")
    serve.add_argument("--tls-client-ca", type=Path, help="PEM CA for client certificates (mutual TLS)")
    serve.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                       help="constructor keyword argument, repeatable")
    serve.add_argument("--max-message-mb", type=float, default=16.0, help="message size cap (MiB)")
    serve.add_argument("--workers", type=int, default=8,
                       help="threads for unary Act calls (each StreamAct stream has its own)")
    serve.set_defaults(func=_serve)

    policy = subparsers.add_parser("policy", help="policy tools")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    check = policy_sub.add_parser(
        "check",
        help="check a policy server the way a run calls it",
        description="Calls GetSpec, Reset, a few hundred acts with observations made from the spec, "
        "and malformed requests; prints a pass/fail table. Exit 0 if all pass, 1 otherwise.",
    )
    check.add_argument("endpoint", help="grpc://host:port or grpcs://host:port")
    check.add_argument("--token-env", metavar="VAR", help="environment variable holding the bearer token")
    check.add_argument("--tls-ca", type=Path, help="PEM CA to trust (turns TLS on)")
    check.add_argument("--acts", type=int, default=300, help="number of acts per mode")
    check.add_argument("--deadline-s", type=float, default=2.0, help="deadline per call")
    check.set_defaults(func=_check)


def _token(var: str | None) -> str | None:
    if var is None:
        return None
    token = os.environ.get(var, "")
    if not token:
        raise BridgeConfigError(f"--token-env {var}: the environment variable is not set or empty")
    return token


def _positive(flag: str, value: float) -> float:
    """``value`` if it is a finite positive number, else a ``BridgeConfigError`` naming ``flag``."""
    if not (math.isfinite(value) and value > 0):
        raise BridgeConfigError(f"{flag} {value}: expected a finite positive number")
    return value


def _serve(args: argparse.Namespace) -> int:
    from testbed.bridge.server import ServerOptions, serve
    from testbed.bridge.targets import parse_kwargs, resolve_policy_target

    # finite before it can become bytes; ServerOptions checks the size's range
    max_message_bytes = int(_positive("--max-message-mb", args.max_message_mb) * 1024 * 1024)
    _positive("--workers", args.workers)
    options = ServerOptions(
        host=args.host,
        port=args.port,
        token=_token(args.token_env),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        max_message_bytes=max_message_bytes,
        max_workers=args.workers,
    )
    factory = resolve_policy_target(args.target, parse_kwargs(args.arg))
    serve(factory, options)
    return 0


def _check(args: argparse.Namespace) -> int:
    from testbed.bridge.check import check_policy_server, format_report

    _positive("--acts", args.acts)
    _positive("--deadline-s", args.deadline_s)
    report = check_policy_server(
        args.endpoint, token=_token(args.token_env), tls_ca=args.tls_ca, acts=args.acts, deadline_s=args.deadline_s
    )
    print(format_report(report))
    return 0 if report.passed else 1
