"""gRPC bridge round trips on loopback, each mode against its own bare-gRPC floor; prints one JSON object.

Observation: ``observation.state`` 7 float32 + ``observation.images.overhead`` 96x96x3 uint8
(27.7 KB encoded); answer: a 10x7 float32 chunk. The bridge runs as ``testbed serve-policy``
(``HoldPolicy``), the floors and pickle in this script's ``--serve-baselines`` child; clients
are in this process. Paths:

- ``act_unary``: the bridge's unary ``Act`` as ``GrpcActionSource(mode="unary")`` makes it
  (``ObservationEncoder`` bytes, call with wire bytes both ways, the answer decoded and validated
  by ``ChunkDecoder``, the message way when it does not read it), called synchronously;
- ``source_unary``: ``GrpcActionSource(mode="unary")`` itself (``submit`` then ``result``);
- ``stream_act``: ``GrpcActionSource`` over ``StreamAct`` (``submit`` then ``result``), the
  path the run loop uses;
- ``floor_unary``: the floor of ``act_unary``: a raw-bytes unary method (identity serializers)
  on a synchronous channel, sending the same encoded observation bytes and answered with
  bytes as long as the bridge's encoded ``ActionChunk`` reply;
- ``floor_stream``: the floor of ``stream_act``: a raw-bytes bidirectional stream driven the
  way ``GrpcActionSource`` drives its stream (a grpc.aio loop turned in this thread, write
  then read), same request bytes, answered with bytes as long as the bridge's ``ActResult``;
- ``pickle``: the common approach: the same observation dict pickled over gRPC unary, the
  chunk pickled back (benchmark only: both ends are this script; the testbed never unpickles
  from a network).

Fairness: every channel and both servers use the bridge's ``channel_options``; both servers are
synchronous ``grpc.server`` processes with the same thread pool size. Every path is warmed up,
then timed twice, the paths taking turns in a fresh random order each turn so that load from
other processes on this shared machine, and the traces a call leaves for the next, fall on all
of them alike: ``interleaved`` (one call per path in turn, so that every
call meets the caches the other paths left, as a policy call does between physics steps) and
``back_to_back`` (``--burst`` calls of a path in a row per turn; the later calls of a burst find
the path's code warm). Each mode reports p50/p99 per path and ``ratio_*`` of p50s, with
``rounds_ratio_*``, the spread of a bar's ratio over ``--rounds`` segments of the run; the
top-level ``ratio_*`` are the worse of the two modes.
Bars: ``ratio_unary_p50_vs_floor`` and ``ratio_stream_p50_vs_floor`` <= 1.3, and both modes
faster than pickle, in both timing modes. ``openpi_reference`` (openpi's websocket server and
client, from its own virtualenv, timed back to back by its own client after the runs above) is
for reference, not a bar: its ratios use the ``back_to_back`` figures. ``sustained_act_per_s``:
``Act`` calls per second with 1 and 4 concurrent synchronous clients.

    .venv/bin/python benchmarks/bridge.py [-n 2000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

from testbed.bridge import GrpcActionSource, codec, spawn_policy_server
from testbed.bridge.generated import common_pb2, policy_pb2
from testbed.bridge.reference import HoldPolicy
from testbed.bridge.server import DEFAULT_MAX_MESSAGE_BYTES, channel_options

WARMUP = 200
ACT = "/testbed.v1.PolicyService/Act"
FLOOR_UNARY = "/bench.Floor/Unary"
FLOOR_STREAM = "/bench.Floor/Stream"
PICKLE = "/bench.Floor/Pickle"
OPTIONS = channel_options(DEFAULT_MAX_MESSAGE_BYTES)
# serve-policy's pool: max_workers unary threads + max_streams stream threads
SERVER_THREADS = 8 + 32
# a step number with a 2-byte varint, like most steps of a run; the floors' messages use it
STEP = 1000


def _observation() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "observation.state": rng.uniform(-1, 1, 7).astype(np.float32),
        "observation.images.overhead": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
    }


def _serve_baselines(unary_reply_bytes: int, stream_reply_bytes: int) -> None:
    """Floor and pickle servers in one synchronous grpc.server; prints one ``listening on`` line."""
    policy = HoldPolicy(image=96)
    unary_reply = bytes(unary_reply_bytes)
    stream_reply = bytes(stream_reply_bytes)

    def unary(request: bytes, context: object) -> bytes:
        return unary_reply

    def stream(requests: Iterator[bytes], context: object) -> Iterator[bytes]:
        for _ in requests:
            yield stream_reply

    def pickled(request: bytes, context: object) -> bytes:
        obs = pickle.loads(request)  # benchmark only: the client is this script
        return pickle.dumps({"actions": policy.act(obs), "step": STEP, "episode": 0, "compute_ms": 0.01})

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.stream_stream_rpc_method_handler(stream),
        "Pickle": grpc.unary_unary_rpc_method_handler(pickled),
    }
    server = grpc.server(ThreadPoolExecutor(max_workers=SERVER_THREADS), options=OPTIONS)
    # registered like the generated code registers the bridge's methods
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Floor", handlers),))
    server.add_registered_method_handlers("bench.Floor", handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


class _FloorStream:
    """The stream floor: one raw-bytes grpc.aio stream whose loop turns in the caller's thread."""

    def __init__(self, target: str, payload: bytes, reply_bytes: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._payload = payload
        self._reply_bytes = reply_bytes
        self._channel, self._call = self._loop.run_until_complete(self._open(target))

    async def _open(self, target: str) -> tuple[grpc.aio.Channel, grpc.aio.StreamStreamCall]:
        channel = grpc.aio.insecure_channel(target, options=OPTIONS)
        call = channel.stream_stream(FLOOR_STREAM)()
        await call.wait_for_connection()
        return channel, call

    async def _round_trip(self) -> None:
        await self._call.write(self._payload)
        reply = await self._call.read()
        if len(reply) != self._reply_bytes:
            raise RuntimeError(f"stream floor answered {len(reply)} bytes, expected {self._reply_bytes}")

    def __call__(self) -> None:
        self._loop.run_until_complete(self._round_trip())

    def close(self) -> None:
        """Cancel the stream and close the channel, letting the call's own tasks finish."""
        self._call.cancel()
        self._loop.run_until_complete(self._call.code())
        self._loop.run_until_complete(self._channel.close())
        # not closed: grpc.aio hands a cancelled call's late completions to the loop it ran on; on a closed loop
        # they print "Event loop is closed" (the sources keep their loops open the same way, testbed.bridge.client)


def _percentiles(samples: list[float]) -> dict[str, float]:
    p50, p99 = np.percentile(samples, [50, 99])
    return {"p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4)}


def _measure(paths: dict[str, Callable[[], object]], n: int, rounds: int, *, burst: int
             ) -> dict[str, list[list[float]]]:
    """Time ``n`` calls of each path, the paths taking turns so that outside load falls on all alike.

    Args:
        paths: the calls to time.
        n: calls per path.
        rounds: the samples are returned in this many consecutive segments.
        burst: calls of one path in a row per turn: 1 (every call meets the caches the other
            paths left) or more (the later calls of a burst find the path's code and data warm).

    Returns:
        per path, its samples (ms) in ``rounds`` consecutive segments.
    """
    for call in paths.values():
        for _ in range(WARMUP):
            call()
    names = list(paths)
    samples: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    size = max(1, n // rounds)
    # a fresh order every turn: a call's cost depends on what ran just before it (an aio stream
    # call after a synchronous call measured ~0.08 ms slower than after another aio call), so no
    # path may keep the same predecessor
    order = random.Random(0)
    for _ in range(n // burst):
        order.shuffle(names)
        for name in names:
            call = paths[name]
            times = samples[name]
            for _ in range(burst):
                start = clock()
                call()
                times.append((clock() - start) * 1e3)
    return {name: [times[k:k + size] for k in range(0, len(times), size)] for name, times in samples.items()}


# (ours, baseline) for each ratio reported
PAIRS = {
    "unary_p50_vs_floor": ("act_unary", "floor_unary"),
    "stream_p50_vs_floor": ("stream_act", "floor_stream"),
    "source_unary_p50_vs_floor": ("source_unary", "floor_unary"),
    "unary_p50_vs_pickle": ("act_unary", "pickle"),
    "stream_p50_vs_pickle": ("stream_act", "pickle"),
    "floor_stream_p50_vs_floor_unary": ("floor_stream", "floor_unary"),
}


def _summarise(samples: dict[str, list[list[float]]]) -> dict[str, object]:
    """p50/p99 per path, the ratios of ``PAIRS``, and the spread of the two bars' ratios over the segments."""
    summary: dict[str, object] = {name: _percentiles([t for seg in segs for t in seg])
                                  for name, segs in samples.items()}
    p50 = {name: summary[name]["p50_ms"] for name in samples}  # type: ignore[index]
    for label, (ours, base) in PAIRS.items():
        summary[f"ratio_{label}"] = round(p50[ours] / p50[base], 3)
    for label in ("unary_p50_vs_floor", "stream_p50_vs_floor"):
        ours, base = PAIRS[label]
        ratios = sorted(float(np.median(a) / np.median(b)) for a, b in zip(samples[ours], samples[base], strict=True))
        summary[f"rounds_ratio_{label}"] = {"min": round(ratios[0], 3), "median": round(ratios[len(ratios) // 2], 3),
                                            "max": round(ratios[-1], 3)}
    return summary


def _sustained(target: str, obs: dict[str, np.ndarray], spec: object, clients: int, seconds: float) -> float:
    stop = threading.Event()
    counts = [0] * clients

    def worker(index: int) -> None:
        encode = codec.ObservationEncoder()
        with grpc.insecure_channel(target, options=OPTIONS) as channel:
            act = channel.unary_unary(ACT, response_deserializer=common_pb2.ActionChunk.FromString)
            metadata = (("testbed-session", f"bench-{index}"),)
            step = 0
            while not stop.is_set():
                codec.decode_chunk(act(encode(obs, episode=0, step=step), metadata=metadata), spec)  # type: ignore[arg-type]
                counts[index] += 1
                step += 1

    with ThreadPoolExecutor(clients) as pool:
        for i in range(clients):
            pool.submit(worker, i)
        time.sleep(seconds)
        stop.set()
    return round(sum(counts) / seconds, 1)


def _start_baselines(unary_reply_bytes: int, stream_reply_bytes: int, log: object) -> tuple[subprocess.Popen, str]:
    argv = [sys.executable, __file__, "--serve-baselines",
            "--unary-reply-bytes", str(unary_reply_bytes), "--stream-reply-bytes", str(stream_reply_bytes)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"baseline server did not start: {line!r}")
    # the child prints nothing more, but its pipe is drained anyway so that it can never block on it
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, line.removeprefix("listening on ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="timed round trips per path")
    parser.add_argument("--rounds", type=int, default=10, help="segments the ratios' spread is reported over")
    parser.add_argument("--burst", type=int, default=25, help="calls in a row per turn in the back_to_back mode")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each sustained run")
    parser.add_argument("--no-openpi", action="store_true", help="skip the openpi reference figure")
    parser.add_argument("--serve-baselines", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--unary-reply-bytes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stream-reply-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baselines:
        _serve_baselines(args.unary_reply_bytes, args.stream_reply_bytes)
        return

    obs = _observation()
    spec = HoldPolicy(image=96).spec()
    encode = codec.ObservationEncoder()
    obs_bytes = encode(obs, episode=0, step=STEP)
    result: dict[str, object] = {"n": args.n, "rounds": args.rounds, "burst": args.burst, "obs_bytes": len(obs_bytes),
                                 "cpu_count": os.cpu_count()}

    with contextlib.ExitStack() as stack:
        bridge = stack.enter_context(spawn_policy_server("testbed.bridge.reference:HoldPolicy", {"image": "96"}))
        channel = stack.enter_context(grpc.insecure_channel(bridge.address, options=OPTIONS))
        # wire bytes both ways, as GrpcActionSource(mode="unary") calls Act
        act_call = channel.unary_unary(ACT)
        # the bridge's real replies size the floors' replies
        reply = common_pb2.ActionChunk.FromString(act_call(obs_bytes))
        unary_reply_bytes = reply.ByteSize()
        stream_reply_bytes = policy_pb2.ActResult(chunk=reply).ByteSize()
        result["reply_bytes_unary"] = unary_reply_bytes
        result["reply_bytes_stream"] = stream_reply_bytes

        log = stack.enter_context(open(os.devnull, "w"))
        baselines, floor_target = _start_baselines(unary_reply_bytes, stream_reply_bytes, log)
        stack.callback(baselines.wait)
        stack.callback(baselines.terminate)
        floor_channel = stack.enter_context(grpc.insecure_channel(floor_target, options=OPTIONS))

        step = iter(range(STEP, 10**9))

        chunks = codec.ChunkDecoder(spec)

        def act_unary() -> None:
            # decoded and checked as GrpcActionSource does: ChunkDecoder, the message way for anything else
            answer = act_call(encode(obs, episode=0, step=next(step)))
            if chunks.chunk(answer) is None:
                codec.decode_chunk(common_pb2.ActionChunk.FromString(answer), spec)

        stream_source = stack.enter_context(GrpcActionSource(bridge.endpoint))
        stream_source.reset(0)
        unary_source = stack.enter_context(GrpcActionSource(bridge.endpoint, mode="unary"))
        unary_source.reset(0)

        def via(source: GrpcActionSource) -> Callable[[], None]:
            def round_trip() -> None:
                source.submit(obs, next(step))
                if source.result(5.0) is None:
                    raise RuntimeError(f"{source.endpoint}: no chunk within 5 s")
            return round_trip

        floor_unary_call = floor_channel.unary_unary(FLOOR_UNARY)

        def floor_unary() -> None:
            if len(floor_unary_call(obs_bytes)) != unary_reply_bytes:
                raise RuntimeError("unary floor answered a wrong size")

        floor_stream = _FloorStream(floor_target, obs_bytes, stream_reply_bytes)
        stack.callback(floor_stream.close)
        pickle_call = floor_channel.unary_unary(PICKLE)

        def pickle_path() -> None:
            answer = pickle.loads(pickle_call(pickle.dumps(obs)))  # benchmark only, see docstring
            if answer["actions"].shape != (spec.chunk_size, spec.action_dim):
                raise RuntimeError("pickle baseline answered a wrong shape")

        paths = {"act_unary": act_unary, "floor_unary": floor_unary, "stream_act": via(stream_source),
                 "floor_stream": floor_stream, "source_unary": via(unary_source), "pickle": pickle_path}
        modes = {mode: _summarise(_measure(paths, args.n, args.rounds, burst=burst))
                 for mode, burst in (("interleaved", 1), ("back_to_back", args.burst))}
        result["sustained_act_per_s"] = {
            "clients_1": _sustained(bridge.address, obs, spec, 1, args.seconds),
            "clients_4": _sustained(bridge.address, obs, spec, 4, args.seconds),
        }

    # the headline ratios are the worse of the two modes
    for label in PAIRS:
        result[f"ratio_{label}"] = max(summary[f"ratio_{label}"] for summary in modes.values())  # type: ignore[type-var]
    result |= modes
    p50 = {mode: {name: summary[name]["p50_ms"] for name in paths}  # type: ignore[index]
           for mode, summary in modes.items()}
    result["bars_met"] = {
        "unary_vs_floor_le_1.3": result["ratio_unary_p50_vs_floor"] <= 1.3,  # type: ignore[operator]
        "stream_vs_floor_le_1.3": result["ratio_stream_p50_vs_floor"] <= 1.3,  # type: ignore[operator]
        "unary_below_pickle": all(m["act_unary"] < m["pickle"] for m in p50.values()),
        "stream_below_pickle": all(m["stream_act"] < m["pickle"] for m in p50.values()),
    }

    peer = Path(__file__).resolve().parent / "openpi_peer.py"
    if peer.is_file() and not args.no_openpi:
        sys.path.insert(0, str(peer.parent))
        try:
            from openpi_peer import measure_openpi  # type: ignore[import-not-found]

            openpi = measure_openpi(obs, args.n)
            result["openpi_reference"] = openpi
            # openpi's client times its calls back to back, in a process of its own, after the runs above
            back_to_back = p50["back_to_back"]
            result["ratio_back_to_back_stream_p50_vs_openpi"] = round(back_to_back["stream_act"] / openpi["p50_ms"], 3)
            result["ratio_back_to_back_floor_stream_p50_vs_openpi"] = round(
                back_to_back["floor_stream"] / openpi["p50_ms"], 3)
        except Exception as exc:  # the peer needs its own virtualenv; report, do not hide
            result["openpi_reference"] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
