"""Shared gRPC plumbing for every musicrec service (the index service and the trainer service).

- ``musicrec.rpc.errors``: domain errors that declare their gRPC status code (``NotFound``,
  ``InvalidArgument``, ``Unavailable``, ...). No gRPC import: domain modules raise these freely.
- ``musicrec.rpc.error_contract``: the error mapping wrapped around every handler when the server is built,
  turning those errors into ``context.abort(code, message)`` and anything else into INTERNAL
  (traceback logged).
- ``musicrec.rpc.auth``: bearer-token authentication of chosen RPCs (a server interceptor).
- ``musicrec.rpc.server``: ``build_server(bindings, ServerConfig(...))`` -> ``GrpcServer`` with the
  error mapping, message size limits, a concurrency bound, health (NOT_SERVING until the service says
  it is ready), reflection, optional TLS, and SIGTERM/SIGINT graceful shutdown helpers.
- ``musicrec.rpc.channel_config``: client channel options with retries for UNAVAILABLE, and the
  message size limit servers and clients share.

This package module imports nothing, so ``import musicrec.rpc.errors`` stays free of gRPC.
"""
