"""TLS for both servers when a certificate and key are given (real processes).

The self-signed pair (SAN localhost and 127.0.0.1) is made in the test, with the ``cryptography``
package when it is installed and ``openssl req -x509`` otherwise (skipped if neither exists). A
client trusting the certificate gets answers and health; a plaintext client cannot talk to the
TLS port; a client that does not trust the certificate is refused the handshake. The trainer
also combines TLS with its bearer token (the token then never crosses the network in clear).
"""

from __future__ import annotations

import os

import grpc
import pytest

from musicrec.rpc.auth import bearer_metadata
from musicrec.v1 import trainer_pb2
from test_faults_harness import (
    SERVING,
    TINY_U0_TOP3,
    IndexClient,
    TrainerClient,
    index_process,
    publish_model,
    self_signed_pair,
    trainer_process,
)

pytestmark = pytest.mark.slow

TOKEN = "tls-and-token-0123456789"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    made = self_signed_pair(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("neither the cryptography package nor openssl is available to make a certificate")
    return made


def test_index_service_over_tls(tmp_path, pair):
    cert, key = pair
    models = tmp_path / "models"
    publish_model(models)
    index = index_process(tmp_path, models, "--tls-cert", str(cert), "--tls-key", str(key)).start()
    try:
        assert "(TLS)" in index.log()
        trusted = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with IndexClient(index.address, credentials=trusted) as client:
            client.wait_serving(1)
            assert [a.artist_id for a in client.recommend("u0", 3).artists] == TINY_U0_TOP3
            assert client.health() == SERVING
        with IndexClient(index.address, retry=False) as plaintext:
            with pytest.raises(grpc.RpcError) as info:
                plaintext.recommend("u0", 3, timeout_s=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        other = self_signed_pair(tmp_path)  # a certificate the client trusts instead
        untrusting = grpc.ssl_channel_credentials(root_certificates=other[0].read_bytes())
        with IndexClient(index.address, credentials=untrusting, retry=False) as client:
            with pytest.raises(grpc.RpcError) as info:
                client.recommend("u0", 3, timeout_s=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert index.stop() == 0, index.tail()


def test_index_refuses_to_start_with_unreadable_tls_files(tmp_path, pair):
    cert, _key = pair
    index = index_process(tmp_path, tmp_path / "models", "--tls-cert", str(cert),
                          "--tls-key", str(tmp_path / "missing.key"))
    with pytest.raises(AssertionError, match="exited with 1"):
        index.start()
    assert "cannot read TLS key" in index.log()


def test_trainer_service_over_tls_with_a_token(tmp_path, pair):
    cert, key = pair
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    trainer = trainer_process(tmp_path, tmp_path / "models", "--tls-cert", str(cert), "--tls-key", str(key),
                              "--token-file", str(token_file)).start()
    try:
        assert "(TLS)" in trainer.log()
        trusted = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with TrainerClient(trainer.address, credentials=trusted) as client:
            assert client.health() == SERVING
            assert client.stub.ListModelVersions(trainer_pb2.ListModelVersionsRequest(), timeout=30).versions == []
            with pytest.raises(grpc.RpcError) as info:
                client.stub.CancelTraining(trainer_pb2.CancelTrainingRequest(job_id="nope"), timeout=30)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # With the token: through to the service, which does not know the job.
            with pytest.raises(grpc.RpcError) as info:
                client.stub.CancelTraining(trainer_pb2.CancelTrainingRequest(job_id="nope"), timeout=30,
                                           metadata=bearer_metadata(TOKEN))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            # The standard TLS call credentials send the same header.
            both = grpc.composite_channel_credentials(trusted, grpc.access_token_call_credentials(TOKEN))
            with TrainerClient(trainer.address, credentials=both) as with_token:
                with pytest.raises(grpc.RpcError) as info:
                    with_token.stub.CancelTraining(trainer_pb2.CancelTrainingRequest(job_id="nope"), timeout=30)
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        assert trainer.stop() == 0, trainer.tail()
