"""A Python gRPC load generator (``grpc.aio``), run as its own process by ``bench.serving``::

    python -m bench.grpc_load --target 127.0.0.1:PORT --rpc recommend --ids-file ids.json \
        --mode closed --inflight 16 --duration 4 --warm-up 1 --max-requests 200000 --out result.json

Every request carries the next id of ``--ids-file`` (all users, or all artists, of the served
version in a shuffled order; ``bench.serving`` writes it), whichever caller sends it: within one
pass over the list no id repeats, so no answer can come from a cache or a warm row. ``--first-index``
starts the pass elsewhere, so that several generator processes do not send the same ids together.

- ``--mode closed``: ``--inflight`` callers, each sending its next request when the previous one
  answers (throughput at a fixed concurrency).
- ``--mode open``: requests paced at ``--rate`` per second whatever the answers do; the latency of
  a request is measured from the moment it was *due*, so a stalled server shows as latency
  instead of being hidden by the client waiting (no coordinated omission). Calls beyond
  ``--max-inflight`` outstanding are not sent and counted as ``shed``.

Every loop is bounded by ``--duration`` and ``--max-requests``. Requests are pre-serialized and
responses left as bytes (no protobuf work in the measured loop besides gRPC's own). The result is
one JSON object: counts, errors by status code, the generator's own CPU seconds over the run, and
the latencies (microseconds) of the requests that started after ``--warm-up``. ``--start-at``
(Unix time) lines up several generator processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import grpc
from grpc import aio

from musicrec.v1 import index_pb2

METHODS = {
    "recommend": "/musicrec.v1.IndexService/Recommend",
    "similar": "/musicrec.v1.IndexService/SimilarArtists",
}
DEFAULT_K = 10


def serialized_requests(rpc: str, ids: list[str], k: int = DEFAULT_K) -> list[bytes]:
    """One serialized request per id: RecommendRequest(user_id) or SimilarArtistsRequest(artist_id)."""
    if rpc == "recommend":
        return [index_pb2.RecommendRequest(user_id=i, k=k).SerializeToString() for i in ids]
    if rpc == "similar":
        return [index_pb2.SimilarArtistsRequest(artist_id=i, k=k).SerializeToString() for i in ids]
    raise ValueError(f"unknown rpc {rpc!r}; expected one of {', '.join(METHODS)}")


class _Tally:
    def __init__(self, measure_from: float):
        self.measure_from = measure_from
        self.latencies_us: list[int] = []
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.error_details: dict[str, str] = {}  # the first message seen for each status code
        self.sent = 0
        self.shed = 0
        self.first_measured: float | None = None
        self.last_done = 0.0

    def record(self, due: float, started: float, code: str | None) -> None:
        done = time.perf_counter()
        if started < self.measure_from:
            return
        if self.first_measured is None:
            self.first_measured = started
        self.last_done = max(self.last_done, done)
        if code is None:
            self.ok += 1
            self.latencies_us.append(int((done - due) * 1e6))
        else:
            self.errors[code] += 1


async def _call(call, payload: bytes, timeout_s: float, tally: "_Tally") -> str | None:
    try:
        await call(payload, timeout=timeout_s)
        return None
    except aio.AioRpcError as exc:
        code = exc.code().name
        tally.error_details.setdefault(code, str(exc.details())[:300])
        return code


async def run_closed(call, payloads: list[bytes], inflight: int, duration_s: float, warm_up_s: float,
                     max_requests: int, timeout_s: float, first_index: int = 0) -> _Tally:
    """``inflight`` callers sharing one request counter: request number i (whichever caller sends
    it) carries ``payloads[(first_index + i) % len(payloads)]``."""
    started = time.perf_counter()
    tally = _Tally(started + warm_up_s)
    stop_at = started + warm_up_s + duration_s
    counter = iter(range(max_requests))

    async def caller() -> None:
        for i in counter:
            now = time.perf_counter()
            if now >= stop_at:
                return
            tally.sent += 1
            code = await _call(call, payloads[(first_index + i) % len(payloads)], timeout_s, tally)
            tally.record(now, now, code)

    await asyncio.gather(*(caller() for _ in range(inflight)))
    return tally


async def run_open(call, payloads: list[bytes], rate: float, duration_s: float, warm_up_s: float,
                   max_requests: int, max_inflight: int, timeout_s: float, first_index: int = 0) -> _Tally:
    started = time.perf_counter()
    tally = _Tally(started + warm_up_s)
    total = min(max_requests, int(rate * (warm_up_s + duration_s)))
    pending: set[asyncio.Task] = set()

    async def one(i: int, due: float) -> None:
        code = await _call(call, payloads[(first_index + i) % len(payloads)], timeout_s, tally)
        tally.record(due, due, code)

    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(pending) >= max_inflight:
            if due >= tally.measure_from:
                tally.shed += 1
            continue
        tally.sent += 1
        task = asyncio.create_task(one(i, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=timeout_s + 5)
    return tally


class _RoundRobin:
    """Calls spread over several channels' multi-callables in turn (one channel: that one)."""

    def __init__(self, calls: list):
        self._calls = calls
        self._next = 0

    def __call__(self, payload: bytes, timeout: float):
        call = self._calls[self._next]
        self._next = (self._next + 1) % len(self._calls)
        return call(payload, timeout=timeout)


async def main_async(args: argparse.Namespace) -> dict:
    with open(args.ids_file, encoding="utf-8") as fh:
        ids = json.load(fh)
    if not ids:
        raise SystemExit(f"{args.ids_file}: no ids to send")
    payloads = serialized_requests(args.rpc, ids, args.k)
    # Each channel its own subchannel pool, hence its own TCP connection: an SO_REUSEPORT server
    # (``--workers N``) spreads connections, not calls, over its worker processes.
    options = [("grpc.use_local_subchannel_pool", 1)] if args.channels > 1 else []
    channels = [aio.insecure_channel(args.target, options=options) for _ in range(max(1, args.channels))]
    try:
        calls = [channel.unary_unary(METHODS[args.rpc]) for channel in channels]  # bytes in, bytes out
        for channel, one_call in zip(channels, calls):
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
            await one_call(payloads[0], timeout=args.timeout)  # connection and server warm
        call = _RoundRobin(calls)
        if args.start_at:
            await asyncio.sleep(max(0.0, args.start_at - time.time()))
        cpu_started = time.process_time()
        if args.mode == "closed":
            tally = await run_closed(call, payloads, args.inflight, args.duration, args.warm_up, args.max_requests,
                                     args.timeout, args.first_index)
        else:
            tally = await run_open(call, payloads, args.rate, args.duration, args.warm_up, args.max_requests,
                                   args.max_inflight, args.timeout, args.first_index)
        cpu_seconds = time.process_time() - cpu_started
    finally:
        for channel in channels:
            await channel.close()
    window = (tally.last_done - tally.first_measured) if tally.first_measured is not None else 0.0
    return {
        "rpc": args.rpc, "mode": args.mode, "inflight": args.inflight, "rate": args.rate,
        "ok": tally.ok, "errors": dict(tally.errors), "error_details": tally.error_details, "sent": tally.sent,
        "shed": tally.shed, "ids": len(ids), "first_index": args.first_index,
        "window_s": window, "cpu_seconds": cpu_seconds, "latencies_us": tally.latencies_us,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the index service")
    parser.add_argument("--rpc", choices=sorted(METHODS), default="recommend")
    parser.add_argument("--ids-file", required=True, help="JSON list of user ids (recommend) or artist ids (similar)")
    parser.add_argument("--first-index", type=int, default=0,
                        help="position in the ids list of the first request (default 0)")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--mode", choices=("closed", "open"), default="closed")
    parser.add_argument("--inflight", type=int, default=1, help="closed loop: requests in flight")
    parser.add_argument("--channels", type=int, default=1,
                        help="gRPC channels (TCP connections) to spread calls over, in turn (default 1)")
    parser.add_argument("--rate", type=float, default=1000.0, help="open loop: requests per second")
    parser.add_argument("--max-inflight", type=int, default=2000, help="open loop: outstanding calls cap")
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds (after the warm-up)")
    parser.add_argument("--warm-up", type=float, default=1.0, help="seconds sent but not measured")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="hard cap on requests sent")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    parser.add_argument("--start-at", type=float, default=0.0, help="Unix time to start at (0: now)")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    if args.inflight < 1 or args.rate <= 0 or args.duration <= 0 or args.max_requests < 1:
        parser.error("--inflight, --rate, --duration and --max-requests must be positive")
    if args.first_index < 0:
        parser.error("--first-index must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(main_async(args))
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
