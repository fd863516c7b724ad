"""Time round trips with openpi's own WebsocketClientPolicy; prints one JSON object.

Runs inside the openpi virtualenv. The observation is read from a file encoded
with openpi-client's msgpack_numpy.

    python bench_client.py --endpoint ws://127.0.0.1:8000 --obs-file obs.msgpack -n 1000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--obs-file", required=True)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    with open(args.obs_file, "rb") as f:
        obs = msgpack_numpy.unpackb(f.read())
    client = WebsocketClientPolicy(host=args.endpoint)
    for _ in range(args.warmup):
        client.infer(obs)
    samples_ms = np.empty(args.n)
    for i in range(args.n):
        start = time.perf_counter()
        client.infer(obs)
        samples_ms[i] = (time.perf_counter() - start) * 1000.0
    print(
        json.dumps(
            {
                "p50_ms": float(np.percentile(samples_ms, 50)),
                "p99_ms": float(np.percentile(samples_ms, 99)),
                "n": args.n,
            }
        )
    )


if __name__ == "__main__":
    main()
