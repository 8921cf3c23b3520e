"""What a distributed training run runs on: a local cluster's size, or a deployment's TF_CONFIG.

Two shapes, both frozen and validated on construction (``ValueError`` with a clear message):

- ``LocalClusterSpec``: ``ps=2,workers=2`` as the command line and the trainer service take it,
  for a cluster of processes on this machine (``trainer_service.distributed.local_cluster``).
- ``TFConfig``: TensorFlow's standard ``TF_CONFIG`` JSON, one per task of a real deployment::

      {"cluster": {"chief": ["host:port"], "worker": ["host:port", ...], "ps": ["host:port", ...]},
       "task": {"type": "worker", "index": 0}}

  A ParameterServerStrategy cluster has exactly one ``chief`` (the coordinator: it runs the
  pipeline and evaluates and publishes), at least one ``worker`` and at least one ``ps``.
  ``cluster_resolver()`` turns it into TensorFlow's ``SimpleClusterResolver``; the standard
  ``TFConfigClusterResolver`` reads the same JSON from the ``TF_CONFIG`` environment variable.

No TensorFlow at import time.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHIEF, WORKER, PS = "chief", "worker", "ps"
JOBS = (CHIEF, WORKER, PS)
# A local cluster runs every task on this machine (each a TensorFlow process of several hundred
# MB): a few are enough to try it; real clusters are deployments (TF_CONFIG), not bounded here.
MAX_PS = 8
MAX_WORKERS = 16
_ADDRESS = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


@dataclass(frozen=True)
class LocalClusterSpec:
    """A local cluster: ``ps`` parameter-server tasks (1..8) and ``workers`` worker tasks (1..16);
    the chief is the calling process. Text form: ``ps=2,workers=2`` (``parse``, ``str``)."""

    ps: int
    workers: int

    def __post_init__(self) -> None:
        for name, value, high in (("ps", self.ps, MAX_PS), ("workers", self.workers, MAX_WORKERS)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if not 1 <= value <= high:
                raise ValueError(f"{name} must be in [1, {high}], got {value}")

    @classmethod
    def parse(cls, text: str) -> "LocalClusterSpec":
        """``"ps=P,workers=W"`` (either order, spaces allowed; ``worker`` accepted for ``workers``)."""
        values: dict[str, int] = {}
        for part in str(text).split(","):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            key = "workers" if key == "worker" else key
            if not sep or key not in ("ps", "workers"):
                raise ValueError(f"bad cluster spec {text!r}: expected ps=P,workers=W (e.g. ps=2,workers=2)")
            if key in values:
                raise ValueError(f"bad cluster spec {text!r}: {key} given twice")
            try:
                values[key] = int(value.strip())
            except ValueError:
                raise ValueError(f"bad cluster spec {text!r}: {key} must be an integer, got {value.strip()!r}") from None
        missing = [key for key in ("ps", "workers") if key not in values]
        if missing:
            raise ValueError(f"bad cluster spec {text!r}: missing {' and '.join(missing)} (e.g. ps=2,workers=2)")
        return cls(ps=values["ps"], workers=values["workers"])

    def __str__(self) -> str:
        return f"ps={self.ps},workers={self.workers}"


@dataclass(frozen=True)
class TFConfig:
    """One task's view of a cluster, as ``TF_CONFIG`` says it.

    ``cluster``: ((job, (address, ...)), ...) in ``JOBS`` order, jobs present only; ``task_type``
    one of the jobs; ``task_index`` the task's position in its job. Use ``from_json``,
    ``from_file``, ``from_env`` or ``for_task`` rather than the constructor.
    """

    cluster: tuple[tuple[str, tuple[str, ...]], ...]
    task_type: str
    task_index: int

    def __post_init__(self) -> None:
        jobs = dict(self.cluster)
        unknown = sorted(set(jobs) - set(JOBS))
        if unknown:
            raise ValueError(f"TF_CONFIG: unknown job(s) {', '.join(unknown)} in cluster; "
                             f"a parameter-server cluster has {', '.join(JOBS)}")
        for job in JOBS:
            if not jobs.get(job):
                raise ValueError(f"TF_CONFIG: the cluster needs at least one {job!r} address")
        if len(jobs[CHIEF]) != 1:
            raise ValueError(f"TF_CONFIG: the cluster needs exactly one chief, got {len(jobs[CHIEF])}")
        seen: set[str] = set()
        for job, addresses in self.cluster:
            for address in addresses:
                match = _ADDRESS.match(address) if isinstance(address, str) else None
                if match is None or not 1 <= int(match.group(1)) <= 65535:
                    raise ValueError(f"TF_CONFIG: {job} address {address!r} is not host:port")
                if address in seen:
                    raise ValueError(f"TF_CONFIG: address {address} appears twice in the cluster")
                seen.add(address)
        if self.task_type not in jobs:
            raise ValueError(f"TF_CONFIG: task type {self.task_type!r} is not one of {', '.join(JOBS)}")
        if isinstance(self.task_index, bool) or not isinstance(self.task_index, int):
            raise ValueError(f"TF_CONFIG: task index must be an integer, got {self.task_index!r}")
        if not 0 <= self.task_index < len(jobs[self.task_type]):
            raise ValueError(f"TF_CONFIG: task index {self.task_index} out of range for job {self.task_type!r} "
                             f"({len(jobs[self.task_type])} task(s))")

    @classmethod
    def for_task(cls, cluster: dict[str, list[str] | tuple[str, ...]], task_type: str, task_index: int) -> "TFConfig":
        """From a ``{job: [address, ...]}`` mapping and the task."""
        if not isinstance(cluster, dict):
            raise ValueError(f"TF_CONFIG: 'cluster' must be an object of job -> addresses, got {cluster!r}")
        pairs = []
        for job in sorted(cluster, key=lambda name: JOBS.index(name) if name in JOBS else len(JOBS)):
            addresses = cluster[job]
            if isinstance(addresses, str) or not isinstance(addresses, (list, tuple)):
                raise ValueError(f"TF_CONFIG: cluster job {job!r} must list addresses, got {addresses!r}")
            pairs.append((job, tuple(addresses)))
        return cls(cluster=tuple(pairs), task_type=task_type, task_index=task_index)

    @classmethod
    def from_json(cls, text: str, *, source: str = "TF_CONFIG") -> "TFConfig":
        """Parse TF_CONFIG JSON; ``source`` names where it came from in error messages."""
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or "cluster" not in data or "task" not in data:
            raise ValueError(f"{source}: expected an object with 'cluster' and 'task'")
        task = data["task"]
        if not isinstance(task, dict) or "type" not in task:
            raise ValueError(f"{source}: 'task' must be an object with 'type' and 'index'")
        try:
            return cls.for_task(data["cluster"], task["type"], task.get("index", 0))
        except ValueError as exc:
            raise ValueError(str(exc).replace("TF_CONFIG", source, 1)) from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TFConfig":
        """Read a TF_CONFIG JSON file (``--cluster FILE``)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read TF_CONFIG file {path}: {exc.strerror or exc}") from None
        return cls.from_json(text, source=f"TF_CONFIG file {path}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "TFConfig":
        """The ``TF_CONFIG`` environment variable (as a Kubernetes pod or the local launcher sets it)."""
        env = os.environ if environ is None else environ
        text = env.get("TF_CONFIG", "")
        if not text.strip():
            raise ValueError("TF_CONFIG is not set: a cluster task needs its cluster and task in TF_CONFIG")
        return cls.from_json(text)

    def jobs(self) -> dict[str, list[str]]:
        """``{job: [address, ...]}`` (TF_CONFIG's "cluster")."""
        return {job: list(addresses) for job, addresses in self.cluster}

    @property
    def num_ps(self) -> int:
        return len(self.jobs()[PS])

    @property
    def num_workers(self) -> int:
        return len(self.jobs()[WORKER])

    def to_json(self) -> str:
        return json.dumps({"cluster": self.jobs(), "task": {"type": self.task_type, "index": self.task_index}})

    def with_task(self, task_type: str, task_index: int) -> "TFConfig":
        """The same cluster seen from another task."""
        return TFConfig(cluster=self.cluster, task_type=task_type, task_index=task_index)

    def cluster_resolver(self):
        """TensorFlow's ``SimpleClusterResolver`` for this task (gRPC)."""
        import tensorflow as tf

        return tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(self.jobs()), task_type=self.task_type, task_id=self.task_index, rpc_layer="grpc")
