"""Bearer-token authentication of the mutating trainer RPCs (``musicrec/rpc/auth.py``).

In process: the interceptor on a real ``build_server`` server with a stand-in TrainerService
(records which handlers ran): StartTraining and CancelTraining need ``authorization: Bearer
<token>``; missing or malformed -> UNAUTHENTICATED, wrong -> PERMISSION_DENIED, and the handler
never runs; read-only RPCs, health and reflection stay open. Token loading from a file or the
environment. Against the real trainer process: ``MUSICREC_TRAINER_TOKEN`` and ``--token-file``.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from musicrec.rpc.auth import BearerTokenInterceptor, bearer_metadata, load_token, method_path
from musicrec.rpc.server import ServerConfig, ServiceBinding, build_server
from musicrec.v1 import trainer_pb2, trainer_pb2_grpc

TOKEN = "s3cret-token-0123456789abcdef"
SERVICE = "musicrec.v1.TrainerService"
PROTECTED = [method_path(SERVICE, "StartTraining"), method_path(SERVICE, "CancelTraining")]


class StandIn(trainer_pb2_grpc.TrainerServiceServicer):
    """Answers every TrainerService RPC at once and records which ran."""

    def __init__(self):
        self.ran: list[str] = []

    async def StartTraining(self, request, context):
        self.ran.append("StartTraining")
        return trainer_pb2.TrainingJob(job_id="j1", state=trainer_pb2.JOB_STATE_RUNNING)

    async def GetTrainingJob(self, request, context):
        self.ran.append("GetTrainingJob")
        return trainer_pb2.TrainingJob(job_id=request.job_id)

    async def WatchTrainingJob(self, request, context):
        self.ran.append("WatchTrainingJob")
        yield trainer_pb2.TrainingJob(job_id=request.job_id, state=trainer_pb2.JOB_STATE_SUCCEEDED)

    async def CancelTraining(self, request, context):
        self.ran.append("CancelTraining")
        return trainer_pb2.TrainingJob(job_id=request.job_id, state=trainer_pb2.JOB_STATE_CANCELLED)

    async def ListModelVersions(self, request, context):
        self.ran.append("ListModelVersions")
        return trainer_pb2.ListModelVersionsResponse()


def run_with_server(body):
    async def main():
        servicer = StandIn()
        server = build_server([ServiceBinding.of(trainer_pb2, "TrainerService", servicer)],
                              ServerConfig(port=0), interceptors=[BearerTokenInterceptor(TOKEN, PROTECTED)])
        await server.start()
        await server.set_serving(True)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                return await body(trainer_pb2_grpc.TrainerServiceStub(channel), channel, servicer)
        finally:
            await server.stop(0)

    return asyncio.run(main())


async def code_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("metadata, expected", [
    (None, grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", "Basic dXNlcjpwYXNz"),), grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", "Bearer"),), grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", "Bearer "),), grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")), grpc.StatusCode.UNAUTHENTICATED),
    (bearer_metadata("wrong"), grpc.StatusCode.PERMISSION_DENIED),
    (bearer_metadata(TOKEN[:-1]), grpc.StatusCode.PERMISSION_DENIED),
    (bearer_metadata(TOKEN + "x"), grpc.StatusCode.PERMISSION_DENIED),
    (bearer_metadata(TOKEN.upper()), grpc.StatusCode.PERMISSION_DENIED),
    (bearer_metadata(TOKEN), grpc.StatusCode.OK),
    ((("authorization", f"bearer   {TOKEN}  "),), grpc.StatusCode.OK),  # scheme is case-insensitive
])
def test_mutating_rpcs_need_the_token(metadata, expected):
    async def body(stub, channel, servicer):
        start = await code_of(stub.StartTraining(trainer_pb2.StartTrainingRequest(), metadata=metadata))
        cancel = await code_of(stub.CancelTraining(trainer_pb2.CancelTrainingRequest(job_id="j1"),
                                                   metadata=metadata))
        return start, cancel, servicer.ran

    start, cancel, ran = run_with_server(body)
    assert (start, cancel) == (expected, expected)
    assert ran == (["StartTraining", "CancelTraining"] if expected == grpc.StatusCode.OK else [])


def test_refusals_say_why_without_echoing_the_token():
    async def body(stub, channel, servicer):
        details = []
        for metadata in (None, bearer_metadata("guess-123")):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.StartTraining(trainer_pb2.StartTrainingRequest(), metadata=metadata)
            details.append(info.value.details())
        return details

    missing, wrong = run_with_server(body)
    assert "authorization" in missing and "Bearer" in missing
    assert "not valid" in wrong and "guess-123" not in wrong and TOKEN not in wrong


def test_an_unauthenticated_request_is_never_parsed():
    """Garbage bytes without a token: UNAUTHENTICATED (not INVALID_ARGUMENT: the body is not read)."""
    async def body(stub, channel, servicer):
        raw = channel.unary_unary(f"/{SERVICE}/StartTraining")
        return await code_of(raw(b"\xff\xff\xff"))

    assert run_with_server(body) == grpc.StatusCode.UNAUTHENTICATED


def test_read_only_rpcs_health_and_reflection_stay_open():
    async def body(stub, channel, servicer):
        codes = [
            await code_of(stub.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id="x"))),
            await code_of(stub.ListModelVersions(trainer_pb2.ListModelVersionsRequest())),
        ]
        updates = [u async for u in stub.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id="x"))]
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        async def one_request():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        listed = [r async for r in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            one_request())]
        return codes, updates, health.status, listed, servicer.ran

    codes, updates, health, listed, ran = run_with_server(body)
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK]
    assert len(updates) == 1 and health == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE in {s.name for s in listed[0].list_services_response.service}
    assert ran == ["GetTrainingJob", "ListModelVersions", "WatchTrainingJob"]


def test_load_token_from_file_or_environment(tmp_path):
    env = "MUSICREC_TRAINER_TOKEN"
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    assert load_token(token_file=token_file, env_var=env, environ={env: "other-token-from-env"}) == TOKEN
    assert load_token(env_var=env, environ={env: "from-env-0123456789"}) == "from-env-0123456789"
    assert load_token(env_var=env, environ={}) is None
    assert load_token(env_var=env, environ={env: "  "}) is None  # empty counts as unset
    for content, message in ((b"", "empty"), (b"two words", "visible ASCII"), (b"\xff\xfe", "not ASCII"),
                             (b"x" * 5000, "larger than")):
        token_file.write_bytes(content)
        with pytest.raises(ValueError, match=message):
            load_token(token_file=token_file)
    with pytest.raises(ValueError, match="cannot read the token file"):
        load_token(token_file=tmp_path / "missing")
    with pytest.raises(ValueError, match=env):
        load_token(env_var=env, environ={env: "has a space"})


def test_interceptor_refuses_bad_configuration():
    with pytest.raises(ValueError):
        BearerTokenInterceptor("", PROTECTED)
    with pytest.raises(ValueError):
        BearerTokenInterceptor(TOKEN, [])


# -- the real trainer process ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("configured_by", ["environment", "token file"])
def test_trainer_process_requires_the_token_for_mutating_rpcs(tmp_path, monkeypatch, configured_by):
    from test_faults_harness import TrainerClient, synthetic_request, trainer_process

    extra: list[str] = []
    if configured_by == "environment":
        monkeypatch.setenv("MUSICREC_TRAINER_TOKEN", TOKEN)
    else:
        monkeypatch.delenv("MUSICREC_TRAINER_TOKEN", raising=False)
        (tmp_path / "token").write_text(TOKEN + "\n")
        extra = ["--token-file", str(tmp_path / "token")]
    trainer = trainer_process(tmp_path, tmp_path / "models", *extra).start()
    try:
        assert TOKEN not in trainer.log()  # never logged
        assert "require a bearer token" in trainer.log()
        with TrainerClient(trainer.address) as client:
            request = synthetic_request(epochs=10_000, factors=8)
            for metadata, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                                   (bearer_metadata("not-the-token-000000"), grpc.StatusCode.PERMISSION_DENIED)):
                with pytest.raises(grpc.RpcError) as info:
                    client.start(request, metadata=metadata)
                assert info.value.code() == code
            # Read-only RPCs and health are open.
            assert client.stub.ListModelVersions(trainer_pb2.ListModelVersionsRequest(), timeout=30).versions == []
            with pytest.raises(grpc.RpcError) as info:
                client.get("no-such-job")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert client.health() == health_pb2.HealthCheckResponse.SERVING
            # With the token: started, then cancelled (the cancel needs it too).
            job = client.start(request, metadata=bearer_metadata(TOKEN))
            cancel = trainer_pb2.CancelTrainingRequest(job_id=job.job_id)
            with pytest.raises(grpc.RpcError) as info:
                client.stub.CancelTraining(cancel, timeout=30)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            client.stub.CancelTraining(cancel, timeout=30, metadata=bearer_metadata(TOKEN))
            assert client.wait_ended(job.job_id).state == trainer_pb2.JOB_STATE_CANCELLED
    finally:
        assert trainer.stop() == 0, trainer.tail()


@pytest.mark.slow
def test_trainer_refuses_to_start_with_an_unusable_token_file(tmp_path):
    from test_faults_harness import trainer_process

    (tmp_path / "token").write_text("has spaces in it")
    trainer = trainer_process(tmp_path, tmp_path / "models", "--token-file", str(tmp_path / "token"))
    with pytest.raises(AssertionError, match="exited with 2"):
        trainer.start()
    assert "visible ASCII" in trainer.log()
