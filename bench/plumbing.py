"""What the server's plumbing costs: the index service against a bare ``grpc.aio`` handler.

``make bench`` measures it inside the serving part (``bench.serving``), on the serving part's model;
``python -m bench.plumbing --serve KIND`` is one of its servers.

Servers, each a child process on 127.0.0.1 (``python -m bench.plumbing --serve KIND --port 0``,
uvloop when installed, as the index service):

- ``bare``: ``grpc.aio.server()`` with the generated ``add_IndexServiceServicer_to_server`` and a
  Recommend that returns an empty response: no interceptor, no option, no health, no reflection.
- ``handler``: ``bare`` with the index service's own servicer (``index_service.servicer``) on the
  served model instead of the empty one, registered unwrapped: what Recommend's work costs
  without any plumbing, so ``service`` against ``handler`` is the plumbing alone.
- the wrapper ladder, each the one above plus one thing, so every wrapper's per-call cost shows:
  ``nothing`` (the service's channel options, health and reflection), ``errors`` (the error
  mapping: ``musicrec.rpc.server.build_server`` with no metrics and no concurrency limit),
  ``metrics`` (+ RPC metrics), ``auth`` (+ a bearer-token interceptor, token configured, Recommend
  not protected: the check every call passes through, and with it ``grpc.aio``'s interceptor
  pipeline, which a server without interceptors does not run), ``limit`` (+
  ``maximum_concurrent_rpcs``, the service's default). The index service's server is ``errors``
  plus ``limit``: metrics are off unless ``--metrics-port`` is given, and only the trainer
  authenticates.

The index service itself is ``python -m index_service`` (one process) serving a model with
precomputed answers. Recommend, h2load at ``INFLIGHT`` in flight on one connection; bare, handler
and service alternate for ``rounds`` rounds (the ladder for ``ladder_rounds``), medians compared,
both as requests/s and as the server process's CPU time per call (``psutil``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

log = logging.getLogger("bench.plumbing")

INFLIGHT = 16
TARGET_RATIO = 0.85
LADDER = ("nothing", "errors", "metrics", "auth", "limit")
# The token of the ladder's auth row (a benchmark's, protecting a method the load never calls).
_BENCH_TOKEN = "bench-token-not-a-secret"


# -- the servers ---------------------------------------------------------------------------------

def _empty_servicer():
    from musicrec.v1 import index_pb2, index_pb2_grpc

    class EmptyRecommend(index_pb2_grpc.IndexServiceServicer):
        async def Recommend(self, request, context):
            return index_pb2.RecommendResponse()

    return EmptyRecommend()


async def _serve_handler(port: int, models_dir: Path) -> int:
    """The ``handler`` server: a bare ``grpc.aio`` server with the index service's servicer."""
    import grpc
    from grpc import aio

    from index_service.holder import ModelHolder
    from index_service.servicer import IndexServicer, index_binding
    from index_service.watcher import VersionWatcher

    holder = ModelHolder()
    watching = asyncio.create_task(VersionWatcher(models_dir, holder).run(1.0))
    while holder.current is None:
        await asyncio.sleep(0.05)
    binding = index_binding(IndexServicer(holder))
    server = aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(binding.name, binding.handlers),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    log.info("handler server listening on 127.0.0.1:%d", bound)
    await server.wait_for_termination()
    watching.cancel()
    return 0


async def _serve(kind: str, port: int) -> int:
    from grpc import aio
    from grpc_health.v1 import health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from musicrec.metrics import RpcMetrics, new_registry
    from musicrec.rpc.auth import BearerTokenInterceptor, method_path
    from musicrec.rpc.server import (DEFAULT_MAX_CONCURRENT_RPCS, HEALTH_SERVICE_NAME, HealthServicer, ServerConfig,
                                     ServiceBinding, build_server)
    from musicrec.v1 import index_pb2, index_pb2_grpc

    servicer = _empty_servicer()
    binding = ServiceBinding.of(index_pb2, "IndexService", servicer)
    address = f"127.0.0.1:{port}"
    if kind in ("bare", "nothing"):
        config = ServerConfig(port=port)
        server = aio.server() if kind == "bare" else aio.server(options=config.channel_args())
        index_pb2_grpc.add_IndexServiceServicer_to_server(servicer, server)
        if kind == "nothing":
            health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
            reflection.enable_server_reflection((binding.name, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
        bound = server.add_insecure_port(address)
        await server.start()
        log.info("%s server listening on 127.0.0.1:%d", kind, bound)
        await server.wait_for_termination()
        return 0
    rung = LADDER.index(kind)
    config = ServerConfig(port=port, maximum_concurrent_rpcs=DEFAULT_MAX_CONCURRENT_RPCS if rung >= 4 else None)
    metrics = RpcMetrics(new_registry()) if rung >= 2 else None
    interceptors = ([BearerTokenInterceptor(_BENCH_TOKEN, [method_path(binding.name, "GetIndexInfo")])]
                    if rung >= 3 else [])
    grpc_server = build_server([binding], config, interceptors=interceptors, metrics=metrics)
    await grpc_server.start()
    await grpc_server.set_serving(True)
    log.info("%s server listening on %s", kind, grpc_server.address)
    await grpc_server.wait_for_shutdown_signal()
    await grpc_server.stop(0)
    return 0


# -- the measurement -----------------------------------------------------------------------------

def _cpu_s(process) -> float:
    """CPU seconds ``process`` (a ``psutil.Process``, all its threads) has used, user and system."""
    times = process.cpu_times()
    return times.user + times.system


def _median(values: list[float]) -> float:
    import statistics

    return float(statistics.median(values))


def measure(settings, workdir: Path, models_dir: Path, material, use_h2load: bool = True) -> dict:
    """The ``plumbing`` result: Recommend requests/s and server CPU microseconds per call of the bare
    handler and of the index service serving ``models_dir`` (alternated, ``rounds`` rounds), and
    the wrapper ladder's medians with each rung's added CPU microseconds per call (the median over
    the ladder's rounds of its CPU per call less the rung below's in the same round). ``material``: ``bench.serving.RequestMaterial`` of the version served.

    ``cpu_ratio`` (bare CPU per call / service CPU per call) is the figure to judge by on a shared
    machine: a saturated one-process server's throughput is about 1 / its CPU per call, and CPU
    time per call hardly moves when other processes take cores, while requests/s swing with them."""
    import psutil

    from bench import h2load
    from bench.grpc_load import METHODS
    from bench.serving import IndexServer, ServerProcess

    if not use_h2load:
        return {"ran": False, "note": "h2load is not installed: the plumbing comparison needs it"}
    rounds = 2 if settings.quick else 6
    ladder_rounds = 1 if settings.quick else 4
    workdir.mkdir(parents=True, exist_ok=True)

    def child(kind: str) -> ServerProcess:
        argv = [sys.executable, "-m", "bench.plumbing", "--serve", kind, "--port", "0"]
        return ServerProcess(argv, workdir / f"plumbing-{kind}.log")

    servers: dict[str, ServerProcess] = {}
    response_bytes: dict[str, int] = {}
    method, body = METHODS["recommend"], material.bodies["recommend"]
    try:
        servers["bare"] = child("bare").start()
        servers["service"] = IndexServer(models_dir, workdir / "plumbing-index-service.log").start()
        servers["handler"] = ServerProcess([*child("handler").argv, "--models-dir", str(models_dir)],
                                           workdir / "plumbing-handler.log").start()
        for kind in LADDER:
            servers[kind] = child(kind).start()
        for kind, server in servers.items():
            seen = h2load.verify_with_nghttp(server.port, method, body)
            if seen["http_status"] != 200 or seen["grpc_status"] != 0 or not seen["data_bytes"]:
                raise RuntimeError(f"the {kind} server does not answer the h2load request: {seen}")
            response_bytes[kind] = seen["data_bytes"]

        def load(kind: str) -> tuple[float, float]:
            """(requests/s, server CPU microseconds per request) of one h2load run on ``kind``."""
            process = psutil.Process(servers[kind].pid)
            before = _cpu_s(process)
            run = h2load.run(servers[kind].port, method, body, response_bytes[kind], workdir / "plumbing-h2load.log",
                             inflight=INFLIGHT, duration_s=settings.load_seconds, warm_up_s=settings.warm_up_seconds)
            cpu_s = _cpu_s(process) - before
            if run.grpc_errors:
                raise RuntimeError(f"{run.grpc_errors} calls to the {kind} server failed: {run.command}")
            # Every request the server handled (warm-up included) shares the CPU time.
            return run.requests_per_s, cpu_s * 1e6 / run.done if run.done else float("nan")

        measured = []
        for n in range(rounds):
            order = ("bare", "handler", "service") if n % 2 == 0 else ("service", "handler", "bare")
            row = {}
            for kind in order:
                row[f"{kind}_rps"], row[f"{kind}_cpu_us"] = load(kind)
            measured.append(row)
            log.info("plumbing round %d: bare %.0f/s %.1f us CPU/call, handler %.0f/s %.1f us, service %.0f/s %.1f us",
                     n + 1, row["bare_rps"], row["bare_cpu_us"], row["handler_rps"], row["handler_cpu_us"],
                     row["service_rps"], row["service_cpu_us"])
        ladder: dict[str, list[tuple[float, float]]] = {kind: [] for kind in ("bare", *LADDER)}
        for n in range(ladder_rounds):
            for kind in (("bare", *LADDER) if n % 2 == 0 else tuple(reversed(("bare", *LADDER)))):
                ladder[kind].append(load(kind))
        commands = {kind: server.command for kind, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    bare = _median([r["bare_rps"] for r in measured])
    service = _median([r["service_rps"] for r in measured])
    bare_cpu_us = _median([r["bare_cpu_us"] for r in measured])
    service_cpu_us = _median([r["service_cpu_us"] for r in measured])
    handler_cpu_us = _median([r["handler_cpu_us"] for r in measured])
    wrappers = []
    below = "bare"
    for kind in LADDER:
        # A rung's cost: the median over the ladder's rounds of its CPU per call less the rung
        # below's in the same round (run next to it), as the rounds' ratios above are paired.
        added = [cpu_us - below_us for (_, cpu_us), (_, below_us) in zip(ladder[kind], ladder[below])]
        wrappers.append({"name": kind, "rps_median": _median([rps for rps, _ in ladder[kind]]),
                         "cpu_us_median": _median([cpu_us for _, cpu_us in ladder[kind]]),
                         "us_per_call": _median(added), "us_per_call_rounds": added})
        below = kind
    result = {"rpc": "Recommend", "inflight": INFLIGHT, "rounds": measured, "bare_rps_median": bare,
              "service_rps_median": service,
              # Judged by the median of the rounds' ratios: a round's two runs are minutes apart at
              # most, so a load that comes and goes moves both, where the ratio of the two medians
              # can pair a quiet run of one with a loaded run of the other.
              "ratio": _median([r["service_rps"] / r["bare_rps"] for r in measured if r["bare_rps"]]),
              "ratio_of_medians": service / bare if bare else float("nan"),
              "bare_cpu_us_median": bare_cpu_us, "service_cpu_us_median": service_cpu_us,
              "cpu_ratio": bare_cpu_us / service_cpu_us if service_cpu_us else float("nan"),
              # The index service's servicer on a bare server: its work without plumbing.
              "handler_rps_median": _median([r["handler_rps"] for r in measured]),
              "handler_cpu_us_median": handler_cpu_us,
              "handler_work_us_per_call": handler_cpu_us - bare_cpu_us,
              "service_plumbing_us_per_call": service_cpu_us - handler_cpu_us,
              "target": TARGET_RATIO, "wrappers": wrappers,
              "ladder_bare_rps_median": _median([rps for rps, _ in ladder["bare"]]),
              "ladder_bare_cpu_us_median": _median([cpu_us for _, cpu_us in ladder["bare"]]),
              "seconds_per_run": settings.load_seconds, "commands": commands}
    log.info("plumbing: bare %.0f/s, service %.0f/s (median of the rounds' ratios %.3fx); CPU per call bare %.1f us, "
             "service %.1f us (%.3fx)", bare, service, result["ratio"], bare_cpu_us, service_cpu_us, result["cpu_ratio"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plumbing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=("bare", "handler", *LADDER), required=True,
                        help="run one of the servers (a child process)")
    parser.add_argument("--models-dir", type=Path, default=None, help="the models the handler server serves")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from index_service.app import loop_factory

    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        if args.serve == "handler":
            return runner.run(_serve_handler(args.port, args.models_dir))
        return runner.run(_serve(args.serve, args.port))


if __name__ == "__main__":
    sys.exit(main())
