"""The index service: answers Recommend / SimilarArtists from the newest published model version.

Modules (only ``servicer`` and ``app`` touch gRPC or protos):

- ``serving_model``: ``ServingModel``, one loaded version answering queries (numpy + Annoy).
- ``holder``: ``ModelHolder``, the single reference to the served version, reference counted.
- ``watcher``: ``VersionWatcher``, polls MODELS_DIR, validates, loads, warms up and swaps.
- ``servicer``: ``IndexServicer``, the thin gRPC adapter; the manifest -> proto conversion is shared: ``musicrec.version_proto``.
- ``app``: ``IndexServiceApp`` wiring server, health and watcher; ``__main__``: the CLI.

Never imports TensorFlow or pandas (start-up time, memory, image size). This package module
imports nothing, so ``python -m index_service`` can configure BLAS threads before numpy loads.
"""
