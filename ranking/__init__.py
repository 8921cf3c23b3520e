"""Ranking: the engine that turns a version's factors into answers, shared by both services.

- ``search``: top-k over a version's artists, exact or Annoy candidates re-ranked exactly (the
  serving algorithm).
- ``inner_product``: the model score as an inner product, and the extra dimension that turns it
  into the angular search Annoy does well.
- ``ann_build``: at publish, build the Annoy indexes and choose their search settings from
  measured recall and latency (``build_indexes``, ``BuildSettings``; a warm publish reuses its
  base version's choice, ``BaseSearch``).
- ``precompute``: at publish, every user's and artist's top lists, made by that same search.

The trainer calls ``build_indexes`` when it publishes and hands the result to
``model_store.publish_version``; the index service searches with ``search``. Both run the same code,
so the recall the trainer records is the recall the index serves, and a precomputed list is the
answer the search would give.

Why not in ``model_store``: ``model_store`` is the on-disk contract between the services (file
layout, manifest, format versions, atomic publish, validation). It should stay small and change only
with the format; ranking is engine code that changes with every tuning. ``ranking`` imports
``model_store`` (the manifest's ``SearchConfig``, ``ModelArtifacts``, ``BuiltIndexes``);
``model_store`` never imports ``ranking``. Like ``model_store``, it imports neither gRPC nor
TensorFlow.
"""

from ranking.ann_build import BaseSearch, BuildSettings, build_indexes

__all__ = ["BaseSearch", "BuildSettings", "build_indexes"]
