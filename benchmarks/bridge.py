"""gRPC bridge round trips on loopback; prints one JSON object.

Observation: ``observation.state`` 7 float32 + ``observation.images.overhead`` 96x96x3 uint8.
Every server runs in its own process (``testbed serve-policy`` for the bridge,
this script's ``--serve-baselines`` mode for the floors), clients in this one:

- ``act_unary``: the bridge's ``Act`` (encode, call, decode and validate the chunk);
- ``stream_act``: ``GrpcActionSource`` over ``StreamAct`` (``submit`` then ``result``),
  the path the run loop uses;
- ``echo``: a bare gRPC unary echo of the same serialized bytes (generic handler, no codec);
- ``echo_stream``: the floor of ``stream_act``: a bare bidirectional-stream echo of the same
  bytes, driven like ``GrpcActionSource`` drives its stream (grpc.aio client loop turned in
  the caller's thread, write then read);
- ``pickle``: the common approach, the observation dict pickled over gRPC unary
  (benchmark only: both ends are this script; the testbed never unpickles from a network);

Fairness: the baselines' server is a synchronous ``grpc.server`` with a thread pool in its
own process, like ``testbed serve-policy``; echo, pickle and ``act_unary`` use the same
synchronous client channel; ``ratio_p50_vs_echo``/``ratio_p50_vs_pickle`` take the bridge's
best mode (named in ``bridge_best_mode``). ``ratio_stream_p50_vs_openpi`` compares
``stream_act`` with openpi-client's own ``infer`` (the issue's definition); the like-for-like
``ratio_stream_source_vs_openpi_source`` compares the two testbed sources (submit, result).
- ``sustained``: ``Act`` calls per second with 1 and 4 concurrent clients;
- ``openpi``: openpi's websocket server (``benchmarks/openpi_peer.py``), when present.

    .venv/bin/python benchmarks/bridge.py [-n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

from testbed.bridge import GrpcActionSource, codec, spawn_policy_server
from testbed.bridge.generated import policy_pb2_grpc
from testbed.bridge.reference import HoldPolicy

WARMUP = 100
ECHO = "/bench.Baseline/Echo"
ECHO_STREAM = "/bench.Baseline/EchoStream"
PICKLE = "/bench.Baseline/Pickle"


def _observation() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "observation.state": rng.uniform(-1, 1, 7).astype(np.float32),
        "observation.images.overhead": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
    }


def _serve_baselines() -> None:
    """Echo and pickle servers (synchronous grpc.server, like the bridge's), one ``listening on`` line."""
    policy = HoldPolicy(image=96)

    def pickled(request: bytes, context: object) -> bytes:
        obs = pickle.loads(request)  # benchmark only: the client is this script
        return pickle.dumps({"actions": policy.act(obs), "step": 0})

    def echo(request: bytes, context: object) -> bytes:
        return request

    def echo_stream(requests: AsyncIterator[bytes], context: object) -> object:
        yield from requests

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "EchoStream": grpc.stream_stream_rpc_method_handler(echo_stream),
        "Pickle": grpc.unary_unary_rpc_method_handler(pickled),
    }
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Baseline", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def _echo_stream(target: str, payload: bytes, n: int) -> dict[str, float]:
    """The stream floor: write then read on one grpc.aio stream whose loop runs in this thread."""
    loop = asyncio.new_event_loop()

    async def open_call() -> tuple[grpc.aio.Channel, grpc.aio.StreamStreamCall]:
        channel = grpc.aio.insecure_channel(target)
        call = channel.stream_stream(ECHO_STREAM)()
        await call.wait_for_connection()
        return channel, call

    channel, call = loop.run_until_complete(open_call())

    async def round_trip() -> None:
        await call.write(payload)
        await call.read()

    try:
        return _time(lambda: loop.run_until_complete(round_trip()), n)
    finally:
        call.cancel()
        loop.run_until_complete(channel.close())
        loop.close()


def _percentiles(samples: list[float]) -> dict[str, float]:
    p50, p99 = np.percentile(samples, [50, 99])
    return {"p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4)}


def _time(call: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(WARMUP):
        call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return _percentiles(samples)


def _sustained(endpoint: str, obs: dict[str, np.ndarray], clients: int, seconds: float) -> float:
    spec = HoldPolicy(image=96).spec()
    stop = threading.Event()
    counts = [0] * clients

    def worker(index: int) -> None:
        with grpc.insecure_channel(endpoint) as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            metadata = (("testbed-session", f"bench-{index}"),)
            step = 0
            while not stop.is_set():
                msg = codec.encode_observation(obs, episode=0, step=step)
                codec.decode_chunk(stub.Act(msg, metadata=metadata), spec)
                counts[index] += 1
                step += 1

    with ThreadPoolExecutor(clients) as pool:
        for i in range(clients):
            pool.submit(worker, i)
        time.sleep(seconds)
        stop.set()
    return round(sum(counts) / seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="timed round trips per path")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each sustained run")
    parser.add_argument("--serve-baselines", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baselines:
        _serve_baselines()
        return

    obs = _observation()
    spec = HoldPolicy(image=96).spec()
    obs_msg = codec.encode_observation(obs, episode=0, step=0)
    obs_bytes = obs_msg.SerializeToString()
    result: dict[str, object] = {"n": args.n, "obs_bytes": len(obs_bytes), "cpu_count": os.cpu_count()}

    with spawn_policy_server("testbed.bridge.reference:HoldPolicy", {"image": "96"}) as bridge:
        target = bridge.address
        with grpc.insecure_channel(target) as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)

            def act() -> None:
                msg = codec.encode_observation(obs, episode=0, step=0)
                codec.decode_chunk(stub.Act(msg), spec)

            result["act_unary"] = _time(act, args.n)

        with GrpcActionSource(bridge.endpoint) as source:
            source.reset(0)
            step = iter(range(10**9))

            def stream() -> None:
                source.submit(obs, next(step))
                if source.result(5.0) is None:
                    raise RuntimeError("stream act timed out")

            result["stream_act"] = _time(stream, args.n)
        result["sustained_act_per_s"] = {
            "clients_1": _sustained(target, obs, 1, args.seconds),
            "clients_4": _sustained(target, obs, 4, args.seconds),
        }

    with subprocess.Popen(
        [sys.executable, __file__, "--serve-baselines"], stdout=-1, text=True
    ) as baselines:
        try:
            assert baselines.stdout is not None
            line = baselines.stdout.readline().strip()
            target = line.removeprefix("listening on ")
            with grpc.insecure_channel(target) as channel:
                echo = channel.unary_unary(ECHO)
                result["echo"] = _time(lambda: echo(obs_bytes), args.n)
                result["echo_stream"] = _echo_stream(target, obs_bytes, args.n)
                pickled = channel.unary_unary(PICKLE)

                def pickle_call() -> None:
                    answer = pickle.loads(pickled(pickle.dumps(obs)))  # benchmark only, see docstring
                    if answer["actions"].shape != (spec.chunk_size, spec.action_dim):
                        raise RuntimeError("pickle baseline answered a wrong shape")

                result["pickle"] = _time(pickle_call, args.n)
        finally:
            baselines.terminate()

    p50: dict[str, float] = {key: result[key]["p50_ms"]  # type: ignore[index]
                             for key in ("act_unary", "stream_act", "echo", "echo_stream", "pickle")}
    best = min(("act_unary", "stream_act"), key=p50.__getitem__)
    result["bridge_best_mode"] = best
    result["ratio_p50_vs_echo"] = round(p50[best] / p50["echo"], 3)
    result["ratio_p50_vs_pickle"] = round(p50[best] / p50["pickle"], 3)
    result["ratio_unary_p50_vs_echo"] = round(p50["act_unary"] / p50["echo"], 3)
    result["ratio_stream_p50_vs_echo"] = round(p50["stream_act"] / p50["echo"], 3)
    result["ratio_stream_p50_vs_echo_stream"] = round(p50["stream_act"] / p50["echo_stream"], 3)
    stream_p50 = p50["stream_act"]

    peer = Path(__file__).resolve().parent / "openpi_peer.py"
    if peer.is_file():
        sys.path.insert(0, str(peer.parent))
        try:
            from openpi_peer import measure_openpi  # type: ignore[import-not-found]

            openpi = measure_openpi(obs, args.n)
            result["openpi"] = openpi
            result["ratio_stream_p50_vs_openpi"] = round(stream_p50 / openpi["p50_ms"], 3)
            result["ratio_stream_source_vs_openpi_source"] = round(stream_p50 / openpi["testbed_source_p50_ms"], 3)
            result["ratio_echo_stream_floor_vs_openpi"] = round(p50["echo_stream"] / openpi["p50_ms"], 3)
        except Exception as exc:  # the peer needs its own virtualenv; report, do not hide
            result["openpi"] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
