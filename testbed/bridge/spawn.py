"""Start ``testbed serve-policy`` as a child process and find its port.

The lead's launch files use it for ``policy: {serve: expert}``: the policy runs in
its own process, reached over gRPC exactly like a remote one.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

from testbed.errors import PolicyUnavailable

TOKEN_ENV = "TESTBED_POLICY_TOKEN"
LISTENING = "listening on "


class PolicyServerProcess:
    """A running ``testbed serve-policy`` child; ``endpoint`` is ``grpc://HOST:PORT``.

    Use as a context manager or call ``close()``; the child's stderr goes to a temp file
    whose tail ends up in error messages.
    """

    def __init__(self, proc: subprocess.Popen[bytes], address: str, log: tempfile._TemporaryFileWrapper) -> None:
        self.proc = proc
        self.address = address
        self.endpoint = f"grpc://{address}"
        self.port = int(address.rsplit(":", 1)[1])
        self._log = log

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of the child's stderr."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-max_bytes:]

    def close(self, timeout_s: float = 5.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after ``timeout_s``)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> PolicyServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def spawn_policy_server(
    target: str,
    args: Mapping[str, str] | None = None,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    extra_argv: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 30.0,
) -> PolicyServerProcess:
    """Start ``python -m testbed.cli serve-policy TARGET`` and wait for its ``listening on`` line.

    Args:
        target: as for ``testbed serve-policy`` (``expert``, ``bc:PATH``, ``pkg.mod:Class``).
        args: constructor keyword arguments (``--arg key=value``).
        token: bearer token the server requires (passed through an environment variable).
        host: bind address.
        port: port, 0 for a free one.
        extra_argv: more ``serve-policy`` flags (e.g. TLS files).
        env: environment overrides for the child (e.g. PYTHONPATH).
        startup_timeout_s: how long to wait for the port.

    Raises:
        PolicyUnavailable: the child exited or did not announce its port in time (with its stderr).
    """
    argv = [sys.executable, "-m", "testbed.cli", "serve-policy", target, "--host", host, "--port", str(port)]
    for key, value in (args or {}).items():
        argv += ["--arg", f"{key}={value}"]
    child_env = {**os.environ, **(env or {})}
    if token:
        argv += ["--token-env", TOKEN_ENV]
        child_env[TOKEN_ENV] = token
    argv += list(extra_argv)
    # stderr to a file, not a pipe: a chatty server must never block on a full pipe
    log = tempfile.NamedTemporaryFile(prefix="serve-policy-", suffix=".log")  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=child_env)
    assert proc.stdout is not None
    # other libraries may print to stdout first (pybullet announces its build time): skip such lines
    buffer = b""
    line = b""
    end = time.monotonic() + startup_timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < end:
            if not selector.select(timeout=min(0.2, max(0.0, end - time.monotonic()))):
                if proc.poll() is not None:
                    break
                continue
            byte = os.read(proc.stdout.fileno(), 1)
            if not byte:
                break
            buffer += byte
            if byte == b"\n":
                if buffer.startswith(LISTENING.encode()):
                    line = buffer
                    break
                buffer = b""
    text = line.decode(errors="replace").strip()
    if not text.startswith(LISTENING):
        server = PolicyServerProcess(proc, "?:0", log)
        tail = server.log_tail()
        server.close()
        why = "exited" if proc.returncode is not None else f"did not announce a port in {startup_timeout_s:.0f} s"
        raise PolicyUnavailable(f"serve-policy {target!r} {why}; stderr:\n{tail}")
    return PolicyServerProcess(proc, text[len(LISTENING):], log)
