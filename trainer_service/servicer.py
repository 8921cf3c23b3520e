"""The TrainerService gRPC servicer: converts requests and results, nothing more.

A StartTraining request takes one path: this servicer converts it once into the job's frozen
``TrainingRequest`` (``proto_convert``) -> ``JobRunner.start_job`` registers the job -> ``worker``
runs it in a child process -> ``pipeline`` trains and reports ``Progress``, which comes back to
the runner as events; the job, holding both, is converted to ``TrainingJob`` here, once, when
it is sent.

The work happens in ``trainer_service.job_runner.JobRunner``; its domain errors carry their
status codes and ``musicrec.rpc``'s interceptor turns them into gRPC statuses:
INVALID_ARGUMENT (bad source, data path outside --data-dir, hyperparameters out of range),
ALREADY_EXISTS (a job is already running; the message names it), NOT_FOUND (unknown job),
FAILED_PRECONDITION (cancelling a job that has ended), RESOURCE_EXHAUSTED (too many watchers),
UNAVAILABLE (the trainer is shutting down).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from musicrec.rpc.errors import InvalidArgument
from musicrec.v1 import trainer_pb2, trainer_pb2_grpc
from musicrec.version_proto import model_version
from trainer_service import proto_convert
from trainer_service.job_runner import JobRunner


def _job_id(value: str) -> str:
    if not value:
        raise InvalidArgument("job_id is required")
    return value


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    """Thin adapter from the TrainerService RPCs to a ``JobRunner``."""

    def __init__(self, runner: JobRunner):
        self._runner = runner

    def _job(self, job) -> trainer_pb2.TrainingJob:
        return proto_convert.job_to_proto(job, self._runner.trains_on_log(job.request))

    async def StartTraining(self, request: trainer_pb2.StartTrainingRequest,
                            context: aio.ServicerContext) -> trainer_pb2.TrainingJob:
        training = proto_convert.training_request_from_proto(request, self._runner.default_source,
                                                             self._runner.default_warm_start)
        return self._job(self._runner.start_job(training))

    async def GetTrainingJob(self, request: trainer_pb2.GetTrainingJobRequest,
                             context: aio.ServicerContext) -> trainer_pb2.TrainingJob:
        return self._job(self._runner.get(_job_id(request.job_id)))

    async def WatchTrainingJob(self, request: trainer_pb2.WatchTrainingJobRequest,
                               context: aio.ServicerContext) -> AsyncIterator[trainer_pb2.TrainingJob]:
        async with self._runner.watch(_job_id(request.job_id)) as updates:
            async for job in updates:
                yield self._job(job)

    async def CancelTraining(self, request: trainer_pb2.CancelTrainingRequest,
                             context: aio.ServicerContext) -> trainer_pb2.TrainingJob:
        return self._job(self._runner.cancel(_job_id(request.job_id)))

    async def ListModelVersions(self, request: trainer_pb2.ListModelVersionsRequest,
                                context: aio.ServicerContext) -> trainer_pb2.ListModelVersionsResponse:
        manifests = await self._runner.list_versions()
        return trainer_pb2.ListModelVersionsResponse(
            versions=[model_version(manifest) for manifest in manifests])
