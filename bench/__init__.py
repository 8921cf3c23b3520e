"""``python -m bench``: musicrec's benchmarks, side by side with the libraries users would pick instead.

Six parts, each a module with a ``run(settings, workdir) -> dict`` entry point:

- ``bench.quality``: leave-one-out HR@10 / NDCG@10 / AUC (mean and spread over 5 random splits) and
  training time on HetRec Last.fm 2K and MovieLens small: our TensorFlow BPR, the notebook recipe,
  ``implicit``'s BPR and ALS, EASE (``bench.ease``), popularity. ``bench.levers`` (run by hand)
  measures training levers on other splits, where the defaults are chosen.
- ``bench.scale``: the synthetic generator at Last.fm 360K scale (and 1/10, 1/100): generation,
  training throughput and peak memory, publish, version size, load, in-process latency and recall.
- ``bench.ann``: recall@10 against exact search and per-query latency of exact search, the
  notebook's Annoy, our Annoy path and hnswlib, plus the recall-latency plot.
- ``bench.serving``: the index service as a real process under load from a Python gRPC client and
  from ``h2load``: closed-loop throughput, open-loop latency, and latency while versions swap,
  against one process and against the multi-process mode (``--workers N``, SO_REUSEPORT); what
  gRPC and each of our wrappers cost (``bench.plumbing``); and, on the scale part's full-scale
  version, throughput, recall and the workers' memory.
- ``bench.history``: new listeners folded in from their history (HR@10 against in-model and
  popularity) and the speed of RecommendForHistory and BatchRecommend.
- ``bench.live``: the play log: RecordPlays throughput, freshness across replicas, serving while
  writing, and live quality against a retrain.

``bench.report`` writes ``docs/benchmarks.json`` and renders ``docs/benchmarks.md`` from it and
the fixed text of ``bench/report_template.md`` (``python -m bench.report`` renders it again).
The peers (implicit, hnswlib) and matplotlib are optional (``pip install -e '.[bench]'``): a row
whose library is missing is skipped with a note, never an error.
"""
