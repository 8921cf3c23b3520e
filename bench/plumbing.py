"""What the server's plumbing costs: the index service against a bare ``grpc.aio`` handler.

``python -m bench.plumbing [--quick] [--workdir DIR]`` prints the ``plumbing`` result (JSON);
``make bench`` runs it inside the serving part (``bench.serving``), on the serving part's model.

Servers, each a child process on 127.0.0.1 (``python -m bench.plumbing --serve KIND --port 0``,
uvloop when installed, as the index service):

- ``bare``: ``grpc.aio.server()`` with the generated ``add_IndexServiceServicer_to_server`` and a
  Recommend that returns an empty response: no interceptor, no option, no health, no reflection.
- the wrapper ladder, each the one above plus one thing, so every wrapper's per-call cost shows:
  ``nothing`` (the service's channel options, health and reflection), ``errors`` (the error
  mapping: ``musicrec.rpc.server.build_server`` with no metrics and no concurrency limit),
  ``metrics`` (+ RPC metrics), ``auth`` (+ a bearer-token interceptor, token configured, Recommend
  not protected: the check every call passes through), ``limit`` (+ ``maximum_concurrent_rpcs``,
  the service's default): the last is the index service's server with an empty handler.

The index service itself is ``python -m index_service`` (one process) serving a model with
precomputed answers. Recommend, h2load at ``INFLIGHT`` in flight on one connection; bare and
service alternate for ``rounds`` rounds (the ladder for ``ladder_rounds``), medians compared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
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


async def _serve(kind: str, port: int) -> int:
    from grpc import aio
    from grpc_health.v1 import health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from musicrec.metrics import RpcMetrics, new_registry
    from musicrec.rpc.auth import BearerTokenInterceptor, method_path
    from musicrec.rpc.server import (DEFAULT_MAX_CONCURRENT_RPCS, HEALTH_SERVICE_NAME, HealthServicer, ServerConfig,
                                     ServiceBinding, build_server)
    from musicrec.v1 import index_pb2, index_pb2_grpc

    binding = ServiceBinding.of(index_pb2, "IndexService", _empty_servicer(),
                                index_pb2_grpc.add_IndexServiceServicer_to_server)
    address = f"127.0.0.1:{port}"
    if kind in ("bare", "nothing"):
        config = ServerConfig(port=port)
        server = aio.server() if kind == "bare" else aio.server(options=config.channel_args())
        binding.add_to_server(binding.servicer, server)
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

def _median(values: list[float]) -> float:
    import statistics

    return float(statistics.median(values))


def measure(settings, workdir: Path, models_dir: Path, material, use_h2load: bool = True) -> dict:
    """The ``plumbing`` result: Recommend requests/s of the bare handler and of the index service
    serving ``models_dir`` (alternated, ``rounds`` rounds), and the wrapper ladder's medians with
    each rung's added microseconds per call (from the throughputs: 1e6/rps minus the rung
    below's). ``material``: ``bench.serving.RequestMaterial`` of the version served."""
    from bench import h2load
    from bench.grpc_load import METHODS
    from bench.serving import IndexServer, ServerProcess

    if not use_h2load:
        return {"ran": False, "note": "h2load is not installed: the plumbing comparison needs it"}
    rounds = 2 if settings.quick else 4
    ladder_rounds = 1 if settings.quick else 2
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
        for kind in LADDER:
            servers[kind] = child(kind).start()
        for kind, server in servers.items():
            seen = h2load.verify_with_nghttp(server.port, method, body)
            if seen["http_status"] != 200 or seen["grpc_status"] != 0 or not seen["data_bytes"]:
                raise RuntimeError(f"the {kind} server does not answer the h2load request: {seen}")
            response_bytes[kind] = seen["data_bytes"]

        def rps(kind: str) -> float:
            run = h2load.run(servers[kind].port, method, body, response_bytes[kind], workdir / "plumbing-h2load.log",
                             inflight=INFLIGHT, duration_s=settings.load_seconds, warm_up_s=settings.warm_up_seconds)
            if run.grpc_errors:
                raise RuntimeError(f"{run.grpc_errors} calls to the {kind} server failed: {run.command}")
            return run.requests_per_s

        measured = []
        for n in range(rounds):
            order = ("bare", "service") if n % 2 == 0 else ("service", "bare")
            row = {f"{kind}_rps": rps(kind) for kind in order}
            measured.append({"bare_rps": row["bare_rps"], "service_rps": row["service_rps"]})
            log.info("plumbing round %d: bare %.0f/s, service %.0f/s", n + 1, row["bare_rps"], row["service_rps"])
        ladder: dict[str, list[float]] = {kind: [] for kind in ("bare", *LADDER)}
        for n in range(ladder_rounds):
            for kind in (("bare", *LADDER) if n % 2 == 0 else tuple(reversed(("bare", *LADDER)))):
                ladder[kind].append(rps(kind))
        commands = {kind: server.command for kind, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    bare = _median([r["bare_rps"] for r in measured])
    service = _median([r["service_rps"] for r in measured])
    wrappers = []
    below = _median(ladder["bare"])
    for kind in LADDER:
        median = _median(ladder[kind])
        wrappers.append({"name": kind, "rps_median": median,
                         "us_per_call": (1e6 / median - 1e6 / below) if median and below else float("nan")})
        below = median
    result = {"rpc": "Recommend", "inflight": INFLIGHT, "rounds": measured, "bare_rps_median": bare,
              "service_rps_median": service, "ratio": service / bare if bare else float("nan"),
              "target": TARGET_RATIO, "wrappers": wrappers, "ladder_bare_rps_median": _median(ladder["bare"]),
              "seconds_per_run": settings.load_seconds, "commands": commands}
    log.info("plumbing: bare %.0f/s, service %.0f/s (%.3fx)", bare, service, result["ratio"])
    return result


def _measure_standalone(quick: bool, workdir: Path, data_dir: Path | None) -> dict:
    """``measure`` on the serving part's model (trained into ``workdir`` on first use)."""
    import shutil

    from bench import h2load
    from bench.models import lastfm_version
    from bench.serving import RequestMaterial, VersionSwapper
    from bench.settings import full_settings, quick_settings

    overrides = {} if data_dir is None else {"data_dir": data_dir}
    settings = quick_settings(**overrides) if quick else full_settings(**overrides)
    version_dir = lastfm_version(workdir, settings)
    models_dir = workdir / "plumbing-models"
    shutil.rmtree(models_dir, ignore_errors=True)
    models_dir.mkdir(parents=True)
    VersionSwapper(version_dir, models_dir, settings.swap_interval_s).publish_one()
    material = RequestMaterial.for_version(version_dir, workdir / "requests")
    return measure(settings, workdir, models_dir, material, h2load.available())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plumbing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=("bare", *LADDER), help="run one of the servers (a child process)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter runs")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/musicrec-bench-plumbing"),
                        help="where the model, logs and request bodies go (kept between runs)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the shared data sets (default: the bench's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.serve is not None:
        from index_service.app import loop_factory

        with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
            return runner.run(_serve(args.serve, args.port))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    print(json.dumps(_measure_standalone(args.quick, args.workdir.resolve(), args.data_dir), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
