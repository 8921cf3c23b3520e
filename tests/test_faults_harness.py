"""Shared helpers of the fault, fuzz and security tests (``test_faults_*``, ``test_fuzz_*``,
``test_security_*``). This module holds no tests.

- Services run as real OS processes on port 0 (``service_processes.ServiceProcess``), optionally
  behind a command prefix (``setpriv`` to drop root's file-permission override).
- ``IndexClient``/``TrainerClient``: blocking gRPC clients with the retrying channel options.
- Known-answer models: ``tiny_model`` (conftest) and ``marked_model(v)``, whose top artist for
  user u0 is ``a{v % 12}``, so any response tells which version answered it.
- Readings of a process (psutil): RSS, mapped files, whether it has exited.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import ANNOY_BUILD, tiny_model
from model_store import Manifest, ModelArtifacts, publish_version
from ranking import build_indexes
from musicrec.rpc.channel_config import IDEMPOTENT_RETRYABLE_CODES, channel_options
from musicrec.v1 import index_pb2, index_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from service_processes import PYTHON, ServiceProcess, child_pids, exited  # noqa: F401 - exited: for the fault tests

INDEX_SERVICE = "musicrec.v1.IndexService"
TRAINER_SERVICE = "musicrec.v1.TrainerService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Upper bound for things that happen within a few poll intervals (hang protection only: the
# machine is shared, so nothing asserts on time).
WAIT_S = 60.0
# Every status code a client may legitimately get for its own input. UNKNOWN and INTERNAL are
# never among them: they mean the server failed.
CLIENT_INPUT_CODES = frozenset({
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
})
TINY_U0_TOP3 = ["a1", "a2", "a11"]  # Recommend(u0, k=3) on conftest.tiny_model


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S, interval_s: float = 0.05) -> Any:
    """Call ``check()`` until it returns something truthy; return it. AssertionError after
    ``timeout_s`` (hang protection, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(interval_s)


def publish_model(models_dir: Path, artifacts: ModelArtifacts | None = None, **overrides) -> Manifest:
    """Publish ``artifacts`` (default: the tiny known-answer model) with placeholder metadata and
    the fast build settings; ``overrides`` go to ``publish_version``."""
    artifacts = artifacts if artifacts is not None else tiny_model()
    kwargs: dict[str, Any] = dict(
        data_source="tests: hand-made factors", data_fingerprint="0" * 64,
        num_interactions=max(1, int(artifacts.seen_indptr[-1])),
        hyperparameters={"factors": artifacts.num_factors}, metrics={"hit_rate_at_10": 0.5},
        keep=1000)
    kwargs.update(overrides)
    return publish_version(models_dir, artifacts, indexes=build_indexes(artifacts, ANNOY_BUILD), **kwargs)


def marked_model(version: int, num_users: int = 8, num_artists: int = 12, factors: int = 4,
                 seed: int = 0) -> ModelArtifacts:
    """A model whose best artist for every user, seen ones included, is ``a{version % num_artists}``
    (a bias of 100 beats any factor score, which is below 10). Sizes are free, so the same shape
    serves for memory tests with bigger catalogs."""
    rng = np.random.default_rng(seed)
    bias = np.zeros(num_artists, dtype=np.float32)
    bias[version % num_artists] = 100.0
    seen_per_user = min(3, num_artists)
    seen = np.concatenate([np.sort(rng.choice(num_artists, size=seen_per_user, replace=False))
                           for _ in range(num_users)]).astype(np.int32)
    return ModelArtifacts(
        user_ids=np.array([f"u{u}" for u in range(num_users)]),
        user_factors=rng.uniform(0, 1, (num_users, factors)).astype(np.float32),
        artist_ids=np.array([f"a{a}" for a in range(num_artists)]),
        artist_names=np.array([f"Artist {a}" for a in range(num_artists)]),
        artist_factors=rng.uniform(0, 1, (num_artists, factors)).astype(np.float32),
        artist_bias=bias,
        artist_listeners=np.ones(num_artists, dtype=np.int32),
        seen_indptr=np.arange(0, num_users * seen_per_user + 1, seen_per_user, dtype=np.int64),
        seen_indices=seen,
    )


def marked_top(version: int, num_artists: int = 12) -> str:
    """The top artist ``marked_model(version)`` gives every user."""
    return f"a{version % num_artists}"


# -- processes -------------------------------------------------------------------------------


def index_process(tmp: Path, models_dir: Path, *extra: str, name: str = "index", port: int = 0,
                  poll_interval_s: float = 0.1, prefix: tuple[str, ...] = ()) -> ServiceProcess:
    """An index-service process (not started)."""
    argv = [*prefix, PYTHON, "-m", "index_service", "--models-dir", str(models_dir), "--port", str(port),
            "--poll-interval", str(poll_interval_s), *extra]
    return ServiceProcess(name, argv, tmp / f"{name}.log")


def trainer_process(tmp: Path, models_dir: Path, *extra: str, data_dir: Path | None = None, name: str = "trainer",
                    port: int = 0, default_source: str = "synthetic:tiny", prefix: tuple[str, ...] = ()) -> ServiceProcess:
    """A trainer process (not started)."""
    argv = [*prefix, PYTHON, "-m", "trainer_service", "serve", "--models-dir", str(models_dir), "--port", str(port),
            "--default-source", default_source, *extra]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    return ServiceProcess(name, argv, tmp / f"{name}.log")


def without_file_permission_override() -> tuple[str, ...] | None:
    """A command prefix that runs a process without the capabilities that let root ignore file
    permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so ``chmod 000`` stops it as it would
    any user. () when not root (permissions apply anyway); None if ``setpriv`` is missing."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search")


def training_child(trainer: ServiceProcess) -> int:
    """PID of the trainer's training process (its multiprocessing "spawn" child)."""

    def find() -> int | None:
        for pid in child_pids(trainer.process.pid):
            try:
                if any("spawn_main" in arg for arg in psutil.Process(pid).cmdline()):
                    return pid
            except psutil.NoSuchProcess:
                continue
        return None

    return wait_until(find, "the trainer's training process")


# -- clients ---------------------------------------------------------------------------------


class _HealthClient:
    """A blocking channel (TLS with ``credentials``) and its health stub; ``with`` closes it."""

    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None, options: list):
        self.channel = (grpc.secure_channel(address, credentials, options=options) if credentials
                        else grpc.insecure_channel(address, options=options))
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def health(self, service: str = "", timeout_s: float = 10.0) -> int:
        return self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s).status


class IndexClient(_HealthClient):
    """Blocking IndexService + health client with the shipped service config for a read-only
    service: retries UNAVAILABLE and CANCELLED (``retryable_codes`` to change), optionally
    ``wait_for_ready``; ``retry=False`` for none."""

    def __init__(self, address: str, *, credentials: grpc.ChannelCredentials | None = None,
                 retry: bool = True, wait_for_ready: bool = False,
                 retryable_codes: tuple[str, ...] = IDEMPOTENT_RETRYABLE_CODES, options: list | None = None):
        opts = list(options or [])
        if retry:
            opts += channel_options([INDEX_SERVICE], wait_for_ready=wait_for_ready, retryable_codes=retryable_codes)
        super().__init__(address, credentials, opts)
        self.stub = index_pb2_grpc.IndexServiceStub(self.channel)

    def recommend(self, user_id: str, k: int = 0, timeout_s: float = 30.0, **kwargs) -> index_pb2.RecommendResponse:
        return self.stub.Recommend(index_pb2.RecommendRequest(user_id=user_id, k=k, **kwargs), timeout=timeout_s)

    def similar(self, timeout_s: float = 30.0, **kwargs) -> index_pb2.SimilarArtistsResponse:
        return self.stub.SimilarArtists(index_pb2.SimilarArtistsRequest(**kwargs), timeout=timeout_s)

    def info(self, timeout_s: float = 30.0) -> index_pb2.GetIndexInfoResponse:
        return self.stub.GetIndexInfo(index_pb2.GetIndexInfoRequest(), timeout=timeout_s)

    def served_version(self) -> int:
        return self.info().model.version

    def rejected(self) -> dict[int, str]:
        return {r.version: r.reason for r in self.info().rejected_versions}

    def wait_serving(self, version: int | None = None) -> None:
        """Wait until health is SERVING (and, if given, ``version`` is the one served). UNAVAILABLE
        while waiting (a process still starting) counts as not yet."""

        def ready() -> bool:
            try:
                return self.health() == SERVING and (version is None or self.served_version() == version)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return False

        wait_until(ready, f"index serving {'a version' if version is None else f'version {version}'}")


class Hammer:
    """Client threads sending requests until stopped, against ``marked_model`` versions: each
    Recommend (k=5, seen included) must put ``marked_top(version)`` first; each SimilarArtists
    (every other request when ``similar``) must return 5 artists. Counts requests, failures
    (any error, even one the retry policy gave up on) and the versions seen. ``client_options``
    go to ``IndexClient`` (e.g. ``wait_for_ready=True``)."""

    def __init__(self, address: str, threads: int = 2, *, num_users: int = 8, num_artists: int = 12,
                 similar: bool = True, **client_options):
        self.num_users, self.num_artists, self.similar = num_users, num_artists, similar
        self.clients = [IndexClient(address, **client_options) for _ in range(threads)]
        self.sent = [0] * threads
        self.errors: list[str] = []
        self.versions: set[int] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        client = self.clients[i]
        user = i
        while not self._stop.is_set():
            user = (user + 7) % self.num_users
            self.sent[i] += 1
            try:
                if self.similar and self.sent[i] % 2 == 0:
                    response = client.similar(artist_id=f"a{user % self.num_artists}", k=5)
                    if len(response.artists) != 5:
                        self.errors.append(f"{len(response.artists)} similar artists from {response.model_version}")
                else:
                    response = client.recommend(f"u{user}", 5, include_seen=True)
                    if response.artists[0].artist_id != marked_top(response.model_version, self.num_artists):
                        self.errors.append(f"wrong top artist for version {response.model_version}")
                self.versions.add(response.model_version)
            except grpc.RpcError as error:
                self.errors.append(f"{error.code()}: {error.details()}")

    @property
    def total(self) -> int:
        """Requests sent so far."""
        return sum(self.sent)

    def wait_for_more(self, count: int, what: str) -> None:
        """Wait until ``count`` more requests have been sent."""
        target = self.total + count
        wait_until(lambda: self.total >= target, what)

    def __enter__(self) -> "Hammer":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        for client in self.clients:
            client.close()


class TrainerClient(_HealthClient):
    """Blocking TrainerService + health client."""

    def __init__(self, address: str, *, credentials: grpc.ChannelCredentials | None = None):
        super().__init__(address, credentials, channel_options([TRAINER_SERVICE]))
        self.stub = trainer_pb2_grpc.TrainerServiceStub(self.channel)

    def start(self, request: trainer_pb2.StartTrainingRequest | None = None, **kwargs) -> trainer_pb2.TrainingJob:
        return self.stub.StartTraining(request or trainer_pb2.StartTrainingRequest(), timeout=30, **kwargs)

    def get(self, job_id: str) -> trainer_pb2.TrainingJob:
        return self.stub.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job_id), timeout=30)

    def wait_ended(self, job_id: str, timeout_s: float = 240.0) -> trainer_pb2.TrainingJob:
        """Poll until the job has ended; its final state."""
        ended = (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED, trainer_pb2.JOB_STATE_CANCELLED)
        return wait_until(lambda: (job := self.get(job_id)).state in ended and job, f"job {job_id} ended",
                          timeout_s=timeout_s, interval_s=0.1)


# A model of 1-2 epochs does not reliably beat popularity: these tests are about faults, not
# quality, so their jobs publish whatever they train (the quality gate off).
PUBLISH_ANYWAY = trainer_pb2.TrainingOptions(gate=trainer_pb2.QUALITY_GATE_OFF)


def synthetic_request(epochs: int = 2, seed: int = 1, **hyperparameters) -> trainer_pb2.StartTrainingRequest:
    """StartTraining on the tiny synthetic preset (a few seconds of training)."""
    from musicrec.v1 import model_pb2

    return trainer_pb2.StartTrainingRequest(
        source=trainer_pb2.DataSource(synthetic=trainer_pb2.SyntheticSource(size=trainer_pb2.SYNTHETIC_SIZE_TINY,
                                                                            seed=seed)),
        hyperparameters=model_pb2.Hyperparameters(epochs=epochs, **hyperparameters),
        options=PUBLISH_ANYWAY)


def files_request(path: str, fmt: int = 0, **fields) -> trainer_pb2.StartTrainingRequest:
    """StartTraining on files under the trainer's --data-dir, with 1 epoch."""
    from musicrec.v1 import model_pb2

    return trainer_pb2.StartTrainingRequest(
        source=trainer_pb2.DataSource(files=trainer_pb2.FileSource(path=path, format=fmt, **fields)),
        hyperparameters=model_pb2.Hyperparameters(epochs=1),
        options=PUBLISH_ANYWAY)


@contextlib.contextmanager
def tiny_model_index(tmp: Path, *extra: str, retry: bool = True):
    """The tiny known-answer model published as version 1 in ``tmp / "models"`` and served by an
    index process (with the command-line options ``extra``): yields (models dir, process, its
    ``IndexClient``). At the end the process must exit 0, whether the caller stopped it or not."""
    models = tmp / "models"
    publish_model(models)
    process = index_process(tmp, models, *extra).start()
    client = IndexClient(process.address, retry=retry)
    try:
        client.wait_serving(1)
        yield models, process, client
    except BaseException:
        process.kill()
        raise
    finally:
        client.close()
    assert process.stop() == 0, process.tail()


# -- process readings (psutil) ---------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    return psutil.Process(pid).memory_info().rss // 1024


def mapped_files(pid: int, suffix: str = ".ann") -> list[str]:
    """Distinct files mapped by ``pid`` whose path ends with ``suffix`` (a deleted file still
    mapped counts: psutil names it by its old path)."""
    return sorted({m.path for m in psutil.Process(pid).memory_maps(grouped=True) if m.path.endswith(suffix)})


# -- TLS -------------------------------------------------------------------------------------


def self_signed_pair(directory: Path, common_name: str = "localhost") -> tuple[Path, Path] | None:
    """A self-signed certificate (SAN localhost and 127.0.0.1) and its key, made with the
    ``cryptography`` package when installed, else ``openssl req -x509``; None if neither is there."""
    cert, key = directory / "server.crt", directory / "server.key"
    try:
        _cryptography_pair(cert, key, common_name)
        return cert, key
    except ImportError:
        pass
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={common_name}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def _cryptography_pair(cert_path: Path, key_path: Path, common_name: str) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
