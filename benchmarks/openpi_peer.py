"""Round trip to openpi's websocket policy server on loopback; prints one JSON object.

The peer model teams use today: openpi-server's ``WebsocketPolicyServer`` in its
own process (from its cached virtualenv, built on first use), answering a zeros
chunk (10, 7). Two clients are timed against it, one after the other:

- ``p50_ms`` / ``p99_ms``: openpi-client's own ``WebsocketClientPolicy.infer``
  (the figure ``benchmarks/bridge.py`` compares its streaming ``StreamAct`` to);
- ``testbed_source_p50_ms`` / ``testbed_source_p99_ms``: the testbed's
  ``OpenPiActionSource`` (``submit`` then ``result``), which adds a hand-off to
  its background thread.

    .venv/bin/python benchmarks/openpi_peer.py [-n 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from testbed.bridge import openpi_codec
from testbed.bridge.openpi_peer import COMPAT_DIR, OpenPiServer, openpi_python
from testbed.bridge.openpi_source import OpenPiActionSource
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec

CHUNK, ACTION_DIM = 10, 7
WARMUP = 50


def _openpi_client_latency(endpoint: str, obs: Mapping[str, np.ndarray], n: int) -> dict[str, float]:
    """Time openpi-client's ``WebsocketClientPolicy`` in the openpi virtualenv."""
    with tempfile.TemporaryDirectory() as tmp:
        obs_file = Path(tmp) / "obs.msgpack"
        obs_file.write_bytes(openpi_codec.pack(dict(obs)))
        done = subprocess.run(
            [
                str(openpi_python()),
                str(COMPAT_DIR / "bench_client.py"),
                "--endpoint", endpoint,
                "--obs-file", str(obs_file),
                "-n", str(n),
                "--warmup", str(WARMUP),
            ],
            capture_output=True, text=True, timeout=600, check=True,
        )
    return json.loads(done.stdout)


def _source_latency(endpoint: str, obs: Mapping[str, np.ndarray], n: int) -> dict[str, float]:
    """Time the testbed's ``OpenPiActionSource``: submit, then wait for the chunk."""
    spec = PolicySpec(
        observation={key: TensorSpec(value.dtype.name, value.shape) for key, value in obs.items()},
        action_kind=ActionKind.JOINT_POSITIONS,
        action_dim=ACTION_DIM,
        chunk_size=CHUNK,
        control_hz=50.0,
    )
    samples_ms = np.empty(n)
    with OpenPiActionSource(endpoint, spec=spec, obs_keys={k: k for k in obs}, deadline_s=5.0) as source:
        for i in range(WARMUP + n):
            start = time.perf_counter()
            source.submit(obs, i)
            chunk = source.result(timeout_s=5.0)
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            if chunk is None or chunk.step != i:
                raise RuntimeError(f"no chunk for step {i} from {endpoint}")
            if i >= WARMUP:
                samples_ms[i - WARMUP] = elapsed_ms
    return {"p50_ms": float(np.percentile(samples_ms, 50)), "p99_ms": float(np.percentile(samples_ms, 99))}


def measure_openpi(obs: dict[str, np.ndarray], n: int) -> dict:
    """Round-trip latency to openpi's own server on loopback, starting and stopping it.

    Args:
        obs: one observation, sent unchanged ``n`` times (after a warm-up).
        n: timed round trips per client.

    Returns:
        ``{"p50_ms", "p99_ms"}`` for openpi-client's ``WebsocketClientPolicy``, plus
        ``testbed_source_p50_ms``/``testbed_source_p99_ms``, ``n`` and ``obs_bytes``.
    """
    with OpenPiServer("zeros", chunk=CHUNK, action_dim=ACTION_DIM) as server:
        openpi = _openpi_client_latency(server.endpoint, obs, n)
        ours = _source_latency(server.endpoint, obs, n)
    return {
        "p50_ms": openpi["p50_ms"],
        "p99_ms": openpi["p99_ms"],
        "testbed_source_p50_ms": ours["p50_ms"],
        "testbed_source_p99_ms": ours["p99_ms"],
        "n": n,
        "obs_bytes": len(openpi_codec.pack(obs)),
        "action_shape": [CHUNK, ACTION_DIM],
        "client": "openpi_client.WebsocketClientPolicy",
        "server": "openpi_server.WebsocketPolicyServer",
    }


def main() -> None:
    """Measure with 7 floats and a 96x96x3 uint8 image and print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    obs = {
        "observation.state": rng.standard_normal(7).astype(np.float32),
        "observation.images.top": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
    }
    print(json.dumps(measure_openpi(obs, args.n)))


if __name__ == "__main__":
    main()
