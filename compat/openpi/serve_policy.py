"""Serve a small test policy with openpi's own WebsocketPolicyServer.

Runs inside the openpi virtualenv (see requirements.txt), never in the testbed's:
it imports nothing from the testbed, so what the testbed talks to is exactly the
server model teams run today.

    python serve_policy.py --port 8000 --policy echo --state-key observation/state \
        --chunk 10 --action-dim 7 --expect observation/image=uint8:96,96,3

``--hang-on N --hang-s S`` makes the N-th request sleep S seconds before it is answered.
openpi's server calls the policy on its event loop, so while it sleeps the whole server
hangs: no answer, no new connection, no health check, as a stuck model server would.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
from openpi_client import base_policy
from openpi_server import WebsocketPolicyServer

POLICIES = ("echo", "hold", "zeros", "nan", "wrong_shape", "raise")


class TestPolicy(base_policy.BasePolicy):
    """A policy whose reply is chosen on the command line, to exercise a client."""

    __test__ = False

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._expect = dict(_parse_expect(item) for item in args.expect)
        self._requests = 0

    def infer(self, obs: dict) -> dict:
        self._requests += 1
        if self._requests == self._args.hang_on:
            time.sleep(self._args.hang_s)
        for key, (dtype, shape) in self._expect.items():
            value = obs[key]  # KeyError -> openpi sends the traceback as a text frame
            if value.dtype != np.dtype(dtype) or value.shape != shape:
                raise ValueError(f"{key}: expected {dtype}{shape}, got {value.dtype}{value.shape}")
        if self._args.sleep_s > 0:
            time.sleep(self._args.sleep_s)
        chunk, dim = self._args.chunk, self._args.action_dim
        kind = self._args.policy
        if kind == "raise":
            raise RuntimeError("test policy raised on purpose")
        if kind == "echo":
            state = np.asarray(obs[self._args.state_key], dtype=np.float64)
            # float64 on purpose: many openpi policies answer in float64.
            actions = np.tile(state[:dim], (chunk, 1)) + np.arange(chunk, dtype=np.float64)[:, None]
        elif kind == "hold":
            # the observed state repeated: absolute joint targets that keep the robot where it is
            state = np.asarray(obs[self._args.state_key], dtype=np.float32)
            actions = np.tile(state[:dim], (chunk, 1))
        elif kind == "zeros":
            actions = np.zeros((chunk, dim), dtype=np.float32)
        elif kind == "nan":
            actions = np.full((chunk, dim), np.nan, dtype=np.float32)
        else:  # wrong_shape
            actions = np.zeros((chunk, dim + 1), dtype=np.float32)
        return {self._args.action_key: actions}


def _parse_expect(item: str) -> tuple[str, tuple[str, tuple[int, ...]]]:
    key, _, spec = item.rpartition("=")
    dtype, _, dims = spec.partition(":")
    return key, (dtype, tuple(int(d) for d in dims.split(",") if d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--policy", choices=POLICIES, default="echo")
    parser.add_argument("--state-key", default="observation/state")
    parser.add_argument("--action-key", default="actions")
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--action-dim", type=int, default=7)
    parser.add_argument("--sleep-s", type=float, default=0.0)
    parser.add_argument("--hang-on", type=int, default=0, help="the request (1-based) that hangs; 0 for none")
    parser.add_argument("--hang-s", type=float, default=0.0, help="how long that request hangs")
    parser.add_argument("--expect", action="append", default=[], metavar="KEY=DTYPE:D1,D2,...")
    parser.add_argument("--metadata", default="{}", help="JSON object sent as the metadata frame")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = WebsocketPolicyServer(TestPolicy(args), host=args.host, port=args.port, metadata=json.loads(args.metadata))
    server.serve_forever()


if __name__ == "__main__":
    main()
