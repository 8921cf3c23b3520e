"""Distributed BPR (trainer_service.distributed): cluster specs and TF_CONFIG, a local cluster of
real processes on 127.0.0.1, sharded tables, the same answers as the single-process trainer,
TensorFlow's handling of a dead worker and a dead ps, and no process left behind."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from musicrec.rpc.errors import InvalidArgument
from service_processes import exited
from trainer_service.data import generate
from trainer_service.distributed import LocalClusterSpec, TFConfig, open_trainer
from trainer_service.distributed.local_cluster import ClusterError, LocalCluster
from trainer_service.evaluation import evaluate, leave_one_out_split, sample_heldout
from trainer_service.hyperparameters import Hyperparameters

REPO = Path(__file__).resolve().parents[1]


# -- cluster specs -----------------------------------------------------------------------------------

def test_local_spec_parses_both_orders_and_prints_back():
    assert LocalClusterSpec.parse("ps=2,workers=3") == LocalClusterSpec(ps=2, workers=3)
    assert LocalClusterSpec.parse(" workers = 1 , ps = 4 ") == LocalClusterSpec(ps=4, workers=1)
    assert LocalClusterSpec.parse("ps=1,worker=1") == LocalClusterSpec(ps=1, workers=1)
    assert str(LocalClusterSpec(2, 2)) == "ps=2,workers=2"


@pytest.mark.parametrize("text, message", [
    ("ps=2", "missing workers"),
    ("workers=2", "missing ps"),
    ("ps=2,workers=two", "workers must be an integer"),
    ("ps=0,workers=2", "ps must be in [1, 8]"),
    ("ps=2,workers=0", "workers must be in [1, 16]"),
    ("ps=2,workers=2,ps=3", "ps given twice"),
    ("chief=1,ps=2,workers=2", "expected ps=P,workers=W"),
    ("", "expected ps=P,workers=W"),
])
def test_bad_local_spec_is_a_clear_value_error(text, message):
    with pytest.raises(ValueError) as error:
        LocalClusterSpec.parse(text)
    assert message in str(error.value)


def _tf_config(task_type="worker", index=0, **cluster_overrides) -> str:
    cluster = {"chief": ["chief:2222"], "worker": ["w0:2222", "w1:2222"], "ps": ["ps0:2222", "ps1:2222"]}
    cluster.update(cluster_overrides)
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_tf_config_round_trips_through_json_env_and_file(tmp_path):
    config = TFConfig.from_json(_tf_config("ps", 1))
    assert (config.task_type, config.task_index, config.num_ps, config.num_workers) == ("ps", 1, 2, 2)
    assert TFConfig.from_json(config.to_json()) == config
    assert TFConfig.from_env({"TF_CONFIG": config.to_json()}) == config
    path = tmp_path / "tf_config.json"
    path.write_text(config.to_json())
    assert TFConfig.from_file(path) == config
    assert config.with_task("chief", 0).jobs() == config.jobs()


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"cluster": {}}), "with 'cluster' and 'task'"),
    (_tf_config(ps=[]), "at least one 'ps'"),
    (_tf_config(chief=["a:1", "b:1"]), "exactly one chief"),
    (_tf_config(evaluator=["e:1"]), "unknown job(s) evaluator"),
    (_tf_config(worker=["w0"]), "is not host:port"),
    (_tf_config(worker=["w0:99999"]), "is not host:port"),
    (_tf_config(worker=["ps0:2222"]), "appears twice"),
    (_tf_config("trainer"), "task type 'trainer'"),
    (_tf_config("worker", 2), "task index 2 out of range"),
])
def test_bad_tf_config_is_a_clear_value_error(text, message):
    with pytest.raises(ValueError) as error:
        TFConfig.from_json(text)
    assert message in str(error.value)


def test_missing_tf_config_and_unreadable_file_are_clear(tmp_path):
    with pytest.raises(ValueError, match="TF_CONFIG is not set"):
        TFConfig.from_env({})
    with pytest.raises(ValueError, match="cannot read TF_CONFIG file"):
        TFConfig.from_file(tmp_path / "missing.json")


def test_cluster_task_with_bad_tf_config_exits_2_naming_the_problem():
    for tf_config, message in (("", "TF_CONFIG is not set"), (_tf_config("chief"), "the chief is not a cluster task")):
        done = subprocess.run([sys.executable, "-m", "trainer_service.distributed.task"], cwd=REPO,
                              env=dict(os.environ, TF_CONFIG=tf_config), capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr


def test_unsupported_hyperparameters_fail_before_any_process_starts():
    data = generate("tiny", seed=0).interactions
    arrays = (data.users, data.artists, data.weights, data.num_users, data.num_artists)
    with pytest.raises(InvalidArgument, match="optimizer 'sgd' only"):
        open_trainer(*arrays, Hyperparameters(optimizer="adagrad"), LocalClusterSpec(1, 1))
    with pytest.raises(InvalidArgument, match="this process is the chief"):
        open_trainer(*arrays, Hyperparameters(epochs=1), TFConfig.from_json(_tf_config("worker", 0)))


# -- a real local cluster ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return generate("tiny", seed=0).interactions


def _split(data, seed):
    return leave_one_out_split(data.users, data.artists, data.weights, data.num_users, data.num_artists, seed)


def _train_arrays(split):
    return split.train_users, split.train_artists, split.train_weights, split.num_users, split.num_artists


def _in_own_process(body, *args) -> None:
    """Run ``body(*args)`` in a fresh (spawned) process and re-raise its failure here.

    TensorFlow connects a process to one cluster for its lifetime. Had the pytest process
    connected, every function it compiled afterwards (later tests' training) would be registered
    on the stopped cluster's tasks, and at exit the runtime would log an error per function and
    task after pytest's summary. So tests that connect do it in a child of their own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(body, args)


def _reaped(pids: list[int]) -> bool:
    return all(exited(pid) for pid in pids)


def _shard_layout(trainer) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    from trainer_service.distributed.trainer import shards

    return {name: [(shard.device, tuple(shard.shape)) for shard in shards(table)]
            for name, table in trainer.tables.items()}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_worker_gives_the_single_process_factors_and_tables_are_sharded(tiny):
    _in_own_process(_one_worker_gives_the_single_process_factors_and_tables_are_sharded, tiny)


def _one_worker_gives_the_single_process_factors_and_tables_are_sharded(tiny):
    """With one worker the distributed trainer sees the same triples and learning rates as the
    single-process one and runs its pieces in order, so the factors agree to float rounding
    (12 minibatches per epoch in 4 scheduled pieces); each ps holds only its rows."""
    from trainer_service.bpr import BPRTrainer
    from trainer_service.distributed.trainer import DistributedBPRTrainer

    split = _split(tiny, 3)
    # A constant rate: the distributed trainer is given one epoch more (to test a stop request).
    hp = Hyperparameters(epochs=3, factors=8, batch_size=512, seed=3, learning_rate=0.1,
                         learning_rate_schedule="constant", negative_candidates=3)
    with BPRTrainer(*_train_arrays(split), hp) as single:
        initial = single.factors()
        for _ in range(hp.epochs):
            single.train_epoch()
        expected = single.factors()
    with LocalCluster(LocalClusterSpec(ps=2, workers=1)) as cluster, \
            DistributedBPRTrainer(*_train_arrays(split), hp.with_overrides(epochs=hp.epochs + 1),
                                  cluster_resolver=cluster.config.cluster_resolver(),
                                  health_check=cluster.check) as trainer:
        pids = cluster.pids()
        layout = _shard_layout(trainer)
        start = trainer.factors()
        for _ in range(hp.epochs):
            assert trainer.train_epoch() is not None
        trained = trainer.factors()
        assert trainer.train_epoch(should_stop=lambda: True) is None  # a stop request is honoured
        with pytest.raises(RuntimeError, match="stopped"):
            trainer.train_epoch()
    assert _reaped(pids)
    for name, rows in (("user_factors", split.num_users), ("artist_factors", split.num_artists),
                       ("artist_bias", split.num_artists)):
        devices = [device for device, _ in layout[name]]
        assert devices == ["/job:ps/replica:0/task:0/device:CPU:0", "/job:ps/replica:0/task:1/device:CPU:0"], name
        sizes = [shape[0] for _, shape in layout[name]]
        assert sum(sizes) == rows and max(sizes) - min(sizes) <= 1, (name, sizes)
    for name in ("user_factors", "artist_factors", "artist_bias"):
        assert np.array_equal(getattr(start, name), getattr(initial, name)), name  # same seeded init
        np.testing.assert_allclose(getattr(trained, name), getattr(expected, name), rtol=0, atol=2e-6, err_msg=name)
    assert not np.allclose(trained.user_factors, start.user_factors)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_workers_reach_single_process_quality_then_survive_a_dead_worker_and_fail_on_a_dead_ps(tiny):
    _in_own_process(_two_workers_reach_single_process_quality_then_survive_a_dead_worker_and_fail_on_a_dead_ps,
                    tiny)


def _two_workers_reach_single_process_quality_then_survive_a_dead_worker_and_fail_on_a_dead_ps(tiny):
    """ps=2, workers=2 on the tiny synthetic set: HR@10 close to the single-process trainer's with
    the same hyperparameters. Then, as TensorFlow's coordinator behaves: a worker killed
    mid-epoch is restarted by the local cluster and reconnected by the coordinator, and the epoch
    completes (its chunk re-runs on a live worker); a ps killed fails the next epoch with a
    ClusterError naming it. Every process is reaped."""
    from trainer_service.distributed.trainer import DistributedBPRTrainer
    from trainer_service.pipeline import fit

    split = _split(tiny, 1)
    hp = Hyperparameters(epochs=20, factors=16, batch_size=256, seed=1)
    selection = sample_heldout(split, None, hp.seed)

    def hit_rate(factors) -> float:
        return evaluate(factors.user_factors, factors.artist_factors, factors.artist_bias, split, selection).model.hit_rate_at_10

    single = hit_rate(fit(*_train_arrays(split), hp).factors)
    with LocalCluster(LocalClusterSpec(ps=2, workers=2)) as cluster, \
            DistributedBPRTrainer(*_train_arrays(split), hp.with_overrides(epochs=hp.epochs + 2),
                                  cluster_resolver=cluster.config.cluster_resolver(),
                                  health_check=cluster.check) as trainer:
        pids = cluster.pids()
        losses = [trainer.train_epoch().loss for _ in range(hp.epochs)]
        distributed = hit_rate(trainer.factors())

        calls = []

        def kill_worker_at_third_chunk() -> bool:
            calls.append(1)
            if len(calls) == 3:
                os.kill(cluster.tasks[-1].process.pid, signal.SIGKILL)  # worker:1
            return False

        recovered = trainer.train_epoch(should_stop=kill_worker_at_third_chunk)
        assert recovered is not None and recovered.samples == trainer.samples_per_epoch
        assert cluster.restarts == {"worker:1": 1}  # the local cluster restarted it; TF reconnected it
        os.kill(cluster.tasks[0].process.pid, signal.SIGKILL)  # ps:0
        with pytest.raises(Exception) as error:
            trainer.train_epoch()
        assert isinstance(error.value, ClusterError) or "ps" in str(error.value), error.value
    assert _reaped(pids)
    assert losses[-1] < 0.75 * losses[0]
    popularity = evaluate(np.zeros((split.num_users, 1), np.float32), np.zeros((split.num_artists, 1), np.float32),
                          np.zeros(split.num_artists, np.float32), split, selection).popularity.hit_rate_at_10
    # On this tiny set the single-process trainer itself is only about 0.17 above popularity
    # (measured: single 0.395, popularity 0.224), and distributed may differ from it by 0.06:
    # a bound of 0.15 above popularity left 0.02 for the asynchronous updates' run-to-run spread
    # and failed in two CI rehearsals of unchanged training code.
    assert distributed > popularity + 0.1, (distributed, popularity)
    assert abs(distributed - single) <= 0.06, (distributed, single)


# The chief handles Ctrl-C as in a terminal: a process started from a shell's background job
# (``make test &``, nohup) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt
# handler, so the SIGINT case would wait out the sleep (it failed that way under ``nohup``).
_CHIEF_SCRIPT = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from trainer_service.distributed.cluster_config import LocalClusterSpec
    from trainer_service.distributed.local_cluster import LocalCluster
    with LocalCluster(LocalClusterSpec(ps=1, workers=1)) as cluster:
        print(" ".join(str(pid) for pid in cluster.pids()), flush=True)
        time.sleep(120)
""")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_task_outlives_its_chief(signum):
    """Ctrl-C stops the tasks through the context manager; SIGTERM and SIGKILL kill the chief
    outright and the kernel kills the tasks (PR_SET_PDEATHSIG)."""
    chief = subprocess.Popen([sys.executable, "-c", _CHIEF_SCRIPT], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        pids = [int(pid) for pid in chief.stdout.readline().split()]
        assert len(pids) == 2 and not _reaped(pids)
        chief.send_signal(signum)
        chief.wait(timeout=60)
        deadline = time.monotonic() + 30
        while not _reaped(pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        # SIGKILL/SIGTERM leave zombies for init to reap; a zombie runs nothing.
        alive = [pid for pid in pids if not exited(pid)]
        assert not alive
    finally:
        if chief.poll() is None:
            chief.kill()
            chief.wait()


def test_cluster_options_choose_local_deployed_or_none(tmp_path, monkeypatch):
    from trainer_service.distributed import cluster_from_options

    assert cluster_from_options() is None
    assert cluster_from_options(distributed="ps=2,workers=2") == LocalClusterSpec(2, 2)
    path = tmp_path / "chief.json"
    path.write_text(_tf_config("chief"))
    assert cluster_from_options(cluster=str(path)).task_type == "chief"
    monkeypatch.setenv("TF_CONFIG", _tf_config("chief"))
    assert cluster_from_options(cluster="env").num_workers == 2
    with pytest.raises(ValueError, match="not both"):
        cluster_from_options(distributed="ps=1,workers=1", cluster=str(path))
