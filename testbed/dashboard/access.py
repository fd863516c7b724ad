"""Who may do what: reading is open to loopback clients, everything else needs the dashboard's token.

Without a token the dashboard binds to loopback only and is read-only. With ``TESTBED_DASHBOARD_TOKEN``
set it may bind beyond loopback; then clients from other hosts need the token to read as well, and
starting or stopping runs needs it from anywhere. The token travels as ``Authorization: Bearer ...``
(and, for WebSockets, whose browser API sets no headers, in the first message).
"""

from __future__ import annotations

import ipaddress
import secrets

from testbed.errors import BridgeConfigError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host is None:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token.

    Raises:
        BridgeConfigError: ``host`` is not a loopback address and no token is set.
    """
    if not is_loopback(host) and not token:
        raise BridgeConfigError(f"dashboard --host {host}: serving beyond loopback needs a token; set "
                                "TESTBED_DASHBOARD_TOKEN (clients send it as 'Authorization: Bearer <token>'), or "
                                "use --host 127.0.0.1")


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class Access:
    """The dashboard's access rules for one token (or none).

    Args:
        token: the operators' token; None makes the dashboard read-only.
    """

    def __init__(self, token: str | None) -> None:
        self.token = token or None

    def token_ok(self, given: str | None) -> bool:
        """``given`` is the dashboard's token."""
        return self.token is not None and given is not None and secrets.compare_digest(given, self.token)

    def read_refusal(self, client_host: str | None, given: str | None) -> str | None:
        """Why a client may not read (None if it may)."""
        if is_loopback(client_host) or self.token_ok(given):
            return None
        if given:
            return "wrong dashboard token"
        return "reading from another host needs the dashboard token: send 'Authorization: Bearer <token>'"

    def control_refusal(self, given: str | None) -> tuple[int, str] | None:
        """Why a client may not start or stop runs, with the HTTP status (None if it may)."""
        if self.token is None:
            return 403, ("starting and stopping runs is disabled: this dashboard has no token (set "
                         "TESTBED_DASHBOARD_TOKEN where it starts)")
        if given is None:
            return 401, "starting and stopping runs needs the dashboard token: send 'Authorization: Bearer <token>'"
        if not self.token_ok(given):
            return 403, "wrong dashboard token"
        return None
