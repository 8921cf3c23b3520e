"""Three index replicas behind one channel with gRPC's client-side round_robin and the documented
retry service config (docs/operations.md): under continuous (bounded) load, one replica killed
and restarted fails no request, every replica takes calls, and all three converge on a version
published during the load."""

from __future__ import annotations

import re
import signal
import threading
import time

import grpc
import pytest

from musicrec.rpc.channel_config import IDEMPOTENT_RETRYABLE_CODES, channel_options
from musicrec.v1 import index_pb2, index_pb2_grpc
from service_processes import PYTHON, ServiceProcess
from test_metrics_index import handled, scrape

pytestmark = pytest.mark.slow

INDEX = "musicrec.v1.IndexService"
WAIT_S = 120.0  # hang protection only
MAX_CALLS = 20_000  # the load's bound, whatever happens
CLIENT_THREADS = 3
PAUSE_S = 0.005  # between one thread's calls: steady load that leaves the 2 shared cores room


def replica_options() -> list[tuple[str, object]]:
    """The documented client settings for replicas (docs/operations.md)."""
    return [*channel_options([INDEX], retryable_codes=IDEMPOTENT_RETRYABLE_CODES, wait_for_ready=True,
                             load_balancing_policy="round_robin"),
            # Reconnect to a restarted replica within a second (gRPC's default backoff grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]


def replica(tmp, models_dir, name: str, port: int = 0) -> ServiceProcess:
    return ServiceProcess(name, [PYTHON, "-m", "index_service", "--models-dir", str(models_dir), "--port", str(port),
                                 "--poll-interval", "0.2", "--metrics-port", "0",
                                 # Connections closed every 2 s under the load: clients reconnect, no call fails.
                                 "--max-connection-age", "2"], tmp / f"{name}.log")


def metrics_url(process: ServiceProcess) -> str:
    return re.findall(r"metrics on (http://\S+/metrics)", process.log())[-1]


def served_version(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        info = index_pb2_grpc.IndexServiceStub(channel).GetIndexInfo(index_pb2.GetIndexInfoRequest(), timeout=10)
        return info.model.version


def wait_until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        time.sleep(0.05)


class Load:
    """Client threads calling Recommend through one channel until stopped (or MAX_CALLS)."""

    def __init__(self, target: str):
        self.channel = grpc.insecure_channel(target, options=replica_options())
        self.stub = index_pb2_grpc.IndexServiceStub(self.channel)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.failures: list[str] = []
        self.versions: set[int] = set()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENT_THREADS)]

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                if self.calls >= MAX_CALLS:
                    return
                self.calls += 1
            try:
                response = self.stub.Recommend(index_pb2.RecommendRequest(user_id="u0", k=2), timeout=30)
                with self.lock:
                    self.versions.add(response.model_version)
            except grpc.RpcError as error:
                with self.lock:
                    self.failures.append(f"{error.code().name}: {error.details()}")
            time.sleep(PAUSE_S)

    def calls_now(self) -> int:
        with self.lock:
            return self.calls

    def run_for(self, calls: int) -> None:
        """Wait until ``calls`` more calls have been made."""
        target = self.calls_now() + calls
        wait_until(lambda: self.calls_now() >= target, f"{calls} more calls")

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        self.channel.close()


def test_a_replica_killed_and_restarted_under_load_fails_no_request(models_dir, publish, tiny_artifacts, tmp_path):
    publish(tiny_artifacts)
    replicas = [replica(tmp_path, models_dir, f"index{n}").start() for n in range(3)]
    try:
        for process in replicas:
            wait_until(lambda p=process: served_version(p.address) == 1, f"{process.name} serving version 1")
        target = "ipv4:" + ",".join(p.address for p in replicas)
        with Load(target) as load:
            load.run_for(150)
            # Every replica takes calls through the one channel.
            for process in replicas:
                wait_until(lambda p=process: handled(scrape(metrics_url(p)), "Recommend", "OK") > 0,
                           f"{process.name} taking calls")
            victim = replicas[1]
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()
            load.run_for(150)  # served by the other two meanwhile
            replicas[1] = restarted = replica(tmp_path, models_dir, "index1-restarted", victim.port).start()
            wait_until(lambda: served_version(restarted.address) == 1, "the restarted replica serving")
            wait_until(lambda: handled(scrape(metrics_url(restarted)), "Recommend", "OK") > 0,
                       "the restarted replica taking calls again")
            publish(tiny_artifacts)  # version 2, under load
            for process in replicas:
                wait_until(lambda p=process: served_version(p.address) == 2, f"{process.name} serving version 2")
            load.run_for(100)
        assert load.failures == [], load.failures[:5]
        assert load.versions == {1, 2}
        assert load.calls_now() < MAX_CALLS
    finally:
        for process in replicas:
            assert process.stop() == 0, process.tail()


def test_liveness_is_serving_while_readiness_waits_for_a_model(models_dir, tmp_path):
    """The Kubernetes probes of deploy/k8s: readiness (service "") NOT_SERVING with no model,
    liveness (service "liveness") SERVING, so a replica waiting for its first model is not restarted."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    process = replica(tmp_path, models_dir, "empty").start()
    try:
        with grpc.insecure_channel(process.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            ready = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
            alive = health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=10).status
        assert (ready, alive) == (health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING)
    finally:
        assert process.stop() == 0, process.tail()
