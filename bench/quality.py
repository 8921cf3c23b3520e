"""Quality and training time under the trainer core's leave-one-out protocol, over several splits.

Per data set, every method trains and is evaluated once on each of ``settings.quality_split_seeds``
(101..105: random leave-one-out splits, ``trainer_service.evaluation.leave_one_out_split``; never
the split seeds the defaults were chosen on, 201..205 in ``bench.levers``, nor seed 0, the one
split older reports used). On split seed ``s`` the training seed is ``s`` too, as ``train --seed s``
does (split and training draw from different random streams of the seed), so the spread covers
both the split and the training's randomness. Each method trains on the training interactions
only and is ranked by OUR evaluator (``evaluate_model``: every artist the user has not heard in
training, ties broken at random in expectation). A row gives the mean over the splits with the
lowest and highest split and the standard deviation. Methods:

- ``ours (default)``: the trainer's TensorFlow BPR with the default hyperparameters (rank-aware
  negatives, cosine learning-rate decay; docs/training.md);
- ``notebook recipe``: the trainer's ``notebook`` preset (popularity negatives, Adagrad 0.1,
  10 epochs, 32 factors), a reference row;
- ``implicit BPR``: ``implicit.cpu.bpr`` with our number of factors and its default settings
  (lr 0.01, reg 0.01, 100 iterations). Its item factors end with a bias column and its user
  factors with a constant 1, which is exactly our model's ``factors . factors + bias`` form;
- ``implicit ALS``: ``implicit.cpu.als`` with our number of factors and its defaults (reg 0.01,
  alpha 1, 15 iterations), on BM25-weighted play counts (K1 100, B 0.8) as implicit's own Last.fm
  example does;
- ``EASE``: the closed-form linear model of Steck 2019 (``bench.ease``), its L2 strength per data
  set chosen by ``bench.levers`` on the choosing splits (``EASE_LAMBDA``);
- ``popularity``: ranking by training listeners (``evaluate_popularity``).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from pathlib import Path

import numpy as np

from bench.measures import Stopwatch, median
from bench.models import data_path, present_datasets
from bench.settings import BenchSettings

log = logging.getLogger(__name__)

# EASE's L2 strength per data set, chosen by the mean HR@10 over the split seeds bench.levers
# chooses on (never the reported ones); docs/levers.md has the table.
EASE_LAMBDA = {"lastfm-2k": 100.0, "movielens-small": 100.0}
DEFAULT_EASE_LAMBDA = 100.0
ALS_FACTORS = 64
FORMATS = {"lastfm-2k": "hetrec", "movielens-small": "movielens"}
MEAN_KEYS = ("hit_rate_at_10", "ndcg_at_10", "auc", "tag_coherence")
MEDIAN_KEYS = ("train_seconds", "samples_per_second")
# "Time to HR@10 >= 0.19": each method is evaluated about this many times along its run (and at
# its end); the evaluations' time is not counted as training time.
TIME_TO_HR_THRESHOLD = 0.19
EVALUATIONS_PER_RUN = 20


def _metrics(m) -> dict:
    return {"hit_rate_at_10": m.hit_rate_at_10, "ndcg_at_10": m.ndcg_at_10, "auc": m.auc,
            "evaluated_users": m.evaluated_users}


class QualityClock:
    """Training time to a quality: evaluates the model every ``every`` epochs (and at the last),
    with the evaluation's own time left out of the training clock, and records the training
    seconds at which HR@10 first reached ``threshold``.

    ``start()`` when training starts (before the trainer is built: compilation counts);
    ``checkpoint(epoch, evaluate)`` after each epoch, where ``evaluate()`` returns the current
    model's ``RankingMetrics``."""

    def __init__(self, epochs: int, threshold: float = TIME_TO_HR_THRESHOLD, every: int | None = None):
        self.epochs = int(epochs)
        self.threshold = threshold
        self.every = every if every is not None else max(1, self.epochs // EVALUATIONS_PER_RUN)
        self.curve: list[tuple[int, float, float]] = []  # (epoch, training seconds, HR@10)
        self.seconds_to_threshold: float | None = None
        self._started = 0.0
        self._excluded = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()
        self._excluded = 0.0

    def elapsed(self) -> float:
        """Training seconds so far (evaluations excluded)."""
        return time.perf_counter() - self._started - self._excluded

    def checkpoint(self, epoch: int, evaluate) -> None:
        if epoch % self.every and epoch != self.epochs:
            return
        trained = self.elapsed()
        before = time.perf_counter()
        hit_rate = float(evaluate().hit_rate_at_10)
        self._excluded += time.perf_counter() - before
        self.curve.append((int(epoch), trained, hit_rate))
        if self.seconds_to_threshold is None and hit_rate >= self.threshold:
            self.seconds_to_threshold = trained

    def as_dict(self) -> dict:
        return {"seconds_to_threshold": self.seconds_to_threshold, "threshold": self.threshold,
                "every": self.every, "curve": self.curve}


def _coherence(artist_factors, tags) -> dict:
    """The tag coherence of a method's SimilarArtists (``bench.tags.tag_coherence``; ``tags``:
    (ArtistTags, listeners per artist), or None without tags)."""
    from bench.tags import tag_coherence

    return {} if tags is None else {"tag_coherence": tag_coherence(np.asarray(artist_factors), *tags)}


def _ours(split, hp, selection, track: bool = True, tags=None) -> dict:
    """Our BPR with ``hp`` on ``split``; ``track``: evaluate along the way (time to quality),
    else only at the end; ``tags``: as ``_coherence`` takes them."""
    from trainer_service.bpr import BPRTrainer
    from trainer_service.evaluation import evaluate_model

    epochs = []
    clock = QualityClock(hp.epochs, every=None if track else hp.epochs + 1)
    clock.start()
    with BPRTrainer(split.train_users, split.train_artists, split.train_weights, split.num_users,
                    split.num_artists, hp) as trainer:
        for _ in range(hp.epochs):
            stats = trainer.train_epoch()
            epochs.append(stats)

            def current():
                f = trainer.factors()
                return evaluate_model(f.user_factors, f.artist_factors, f.artist_bias, split, selection)

            clock.checkpoint(stats.epoch, current)
        seconds = clock.elapsed()
        factors = trainer.factors()
    rates = [e.samples_per_second for e in epochs]
    return {**_metrics(evaluate_model(factors.user_factors, factors.artist_factors, factors.artist_bias, split,
                                      selection)),
            "train_seconds": seconds, "samples_per_second": median(rates),
            "epoch_samples_per_second": rates, **({"time_to_quality": clock.as_dict()} if track else {}),
            **_coherence(factors.artist_factors, tags)}


def _train_matrix(split, weights: np.ndarray | None = None):
    from scipy.sparse import csr_matrix

    values = split.train_weights if weights is None else weights
    return csr_matrix((np.asarray(values, dtype=np.float32), split.train_artists, split.train_indptr),
                      shape=(split.num_users, split.num_artists))


def _implicit_bpr(split, factors: int, seed: int, selection, track: bool = True, tags=None) -> dict:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    from trainer_service.evaluation import evaluate_model

    matrix = _train_matrix(split)
    model = BayesianPersonalizedRanking(factors=factors, random_state=seed)
    clock = QualityClock(model.iterations, every=None if track else model.iterations + 1)

    def current():
        # implicit appends a bias column to the items and a constant 1 to the users.
        users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
        assert np.allclose(users[:, -1], 1.0), "implicit's BPR user factors no longer end with a 1 column"
        return evaluate_model(users[:, :-1], items[:, :-1], items[:, -1], split, selection)

    clock.start()
    model.fit(matrix, show_progress=False, callback=lambda iteration, *_: clock.checkpoint(iteration + 1, current))
    seconds = clock.elapsed()
    samples = model.iterations * matrix.nnz
    return {**_metrics(current()), "train_seconds": seconds, "samples_per_second": samples / seconds,
            **({"time_to_quality": clock.as_dict()} if track else {}),
            **_coherence(np.asarray(model.item_factors)[:, :-1], tags)}


def _implicit_als(split, factors: int, seed: int, selection, regularization: float = 0.01, iterations: int = 15,
                  alpha: float = 1.0, track: bool = True, tags=None) -> dict:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight
    from threadpoolctl import threadpool_limits

    from trainer_service.evaluation import evaluate_model

    matrix = bm25_weight(_train_matrix(split), K1=100, B=0.8).tocsr().astype(np.float32)
    # implicit parallelizes itself and asks for single-threaded BLAS (it checks when constructed).
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, iterations=iterations,
                                        alpha=alpha, random_state=seed)
        clock = QualityClock(model.iterations, every=None if track else model.iterations + 1)

        def current():
            users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
            return evaluate_model(users, items, np.zeros(items.shape[0], np.float32), split, selection)

        clock.start()
        model.fit(matrix, show_progress=False,
                  callback=lambda iteration, *_: clock.checkpoint(iteration + 1, current))
        seconds = clock.elapsed()
    return {**_metrics(current()), "train_seconds": seconds, "samples_per_second": None,
            "interactions_per_second": model.iterations * matrix.nnz / seconds,
            **({"time_to_quality": clock.as_dict()} if track else {}), **_coherence(model.item_factors, tags)}


def peer_run(name: str, overrides: dict, split, selection, seed: int) -> dict | None:
    """A peer method named like ``bench.levers``' variants: "ease..." (field ``lambda``) or
    "als..." (fields ``factors``, ``regularization``, ``iterations``, ``alpha``); None for any
    other name (our BPR)."""
    if name.startswith("ease"):
        from bench import ease

        return ease.evaluate(split, float(overrides.get("lambda", DEFAULT_EASE_LAMBDA)), selection)
    if name.startswith("als"):
        return _implicit_als(split, int(overrides.get("factors", ALS_FACTORS)), seed, selection,
                             regularization=float(overrides.get("regularization", 0.01)),
                             iterations=int(overrides.get("iterations", 15)), alpha=float(overrides.get("alpha", 1.0)))
    return None


def _summary(runs: list[dict]) -> dict:
    """One row from a method's runs (one per split): means of the ranking metrics, min / max /
    standard deviation (population) of HR@10 and NDCG@10, medians of the times, the slowest
    training."""
    def present(key):
        return [r[key] for r in runs if r.get(key) is not None]

    row = {key: statistics.fmean(present(key)) if present(key) else None for key in MEAN_KEYS}
    row.update({key: median(present(key)) if present(key) else None for key in MEDIAN_KEYS})
    for key, short in (("hit_rate_at_10", "hit_rate"), ("ndcg_at_10", "ndcg")):
        values = present(key)
        row[f"{short}_min"], row[f"{short}_max"] = (min(values), max(values)) if values else (None, None)
        row[f"{short}_std"] = statistics.pstdev(values) if values else None
    row["train_seconds_max"] = max(present("train_seconds"), default=None)
    row["evaluated_users"] = runs[0]["evaluated_users"] if runs else 0
    # Median over the runs that tracked it (the first split's), a run that never reached the
    # threshold counting as infinitely slow; None when the median run did not reach it.
    tracked = [r for r in runs if "time_to_quality" in r]
    reached = sorted(math.inf if r["time_to_quality"]["seconds_to_threshold"] is None
                     else r["time_to_quality"]["seconds_to_threshold"] for r in tracked)
    if tracked:
        middle = statistics.median(reached)
        row["seconds_to_threshold"] = None if not math.isfinite(middle) else middle
        row["runs_reaching_threshold"] = sum(math.isfinite(t) for t in reached)
    if any(r.get("interactions_per_second") for r in runs):
        row["interactions_per_second"] = median(r["interactions_per_second"] for r in runs)
    row["runs"] = len(runs)
    row["per_run"] = runs
    return row


def evaluate_dataset(name: str, settings: BenchSettings) -> dict:
    from trainer_service.data import load_files
    from trainer_service.evaluation import evaluate_popularity, leave_one_out_split, sample_heldout
    from trainer_service.hyperparameters import NOTEBOOK, Hyperparameters

    path = data_path(settings, name)
    data = load_files(path, FORMATS[name])
    ours_hp = Hyperparameters().resolved(data.num_interactions, data.num_users)  # the factors `train` chooses on this data
    if settings.quality_epochs is not None:
        ours_hp = ours_hp.with_overrides(epochs=settings.quality_epochs)
    notebook_hp = NOTEBOOK if settings.quality_epochs is None else NOTEBOOK.with_overrides(
        epochs=min(NOTEBOOK.epochs, settings.quality_epochs))
    lam = EASE_LAMBDA.get(name, DEFAULT_EASE_LAMBDA)
    notes = []
    # Time to HR@10 >= 0.19 evaluates a run ~20 times along the way: measured on the first split
    # only (it is about training speed, not the split), the other splits evaluate at the end only.
    first = settings.quality_split_seeds[0]
    tags = None if data.tags is None else (data.tags, data.listeners_per_artist())
    methods = [
        ("ours (default)", lambda split, sel, seed: _ours(split, ours_hp.with_overrides(seed=seed), sel,
                                                           track=seed == first, tags=tags),
         f"TensorFlow BPR, {ours_hp.factors} factors, {ours_hp.epochs} epochs, {ours_hp.optimizer} "
         f"lr {ours_hp.learning_rate:g} ({ours_hp.learning_rate_schedule}), reg {ours_hp.regularization:g}, "
         f"{ours_hp.negative_sampling} negatives (hardest of {ours_hp.negative_candidates})"),
        ("notebook recipe", lambda split, sel, seed: _ours(split, notebook_hp.with_overrides(seed=seed), sel,
                                                            track=seed == first, tags=tags),
         f"trainer preset 'notebook': {notebook_hp.factors} factors, {notebook_hp.epochs} epochs, "
         f"{notebook_hp.optimizer} lr {notebook_hp.learning_rate:g}, {notebook_hp.negative_sampling} negatives"),
    ]
    try:
        import implicit  # noqa: F401
        methods += [
            ("implicit BPR", lambda split, sel, seed: _implicit_bpr(split, ours_hp.factors, seed, sel,
                                                                    track=seed == first, tags=tags),
             f"implicit {_version('implicit')} cpu BPR, {ours_hp.factors} factors, lr 0.01, reg 0.01, 100 iterations"),
            ("implicit ALS", lambda split, sel, seed: _implicit_als(split, ours_hp.factors, seed, sel,
                                                                    track=seed == first, tags=tags),
             f"implicit {_version('implicit')} cpu ALS, {ours_hp.factors} factors, reg 0.01, alpha 1, "
             "15 iterations, BM25-weighted plays"),
        ]
    except ImportError:
        notes.append("implicit is not installed: its rows are skipped (pip install -e '.[bench]')")
    from bench import ease

    methods.append(("EASE", lambda split, sel, seed: ease.evaluate(split, lam, sel),
                    f"closed form (Steck 2019), lambda {lam:g} (chosen on other splits), binary plays, artists "
                    f"with >= {ease.MIN_LISTENERS} training listeners"))
    runs: dict[str, list[dict]] = {method: [] for method, _, _ in methods}
    popularity_runs = []
    heldout, evaluated, train_interactions = [], [], []
    for split_seed in settings.quality_split_seeds:
        split = leave_one_out_split(data.users, data.artists, data.weights, data.num_users, data.num_artists,
                                    seed=split_seed)
        selection = sample_heldout(split, settings.quality_max_users, split_seed)
        heldout.append(int(split.num_heldout))
        evaluated.append(int(len(selection)))
        train_interactions.append(int(split.train_users.size))
        # Methods alternate within a split, so a noisy machine slows all of them alike.
        for method, train, _ in methods:
            started = time.perf_counter()
            run = {**train(split, selection, split_seed), "split_seed": split_seed}
            runs[method].append(run)
            log.info("quality %s %s split %d: HR@10 %.4f (%.1f s)", name, method, split_seed,
                     run["hit_rate_at_10"], time.perf_counter() - started)
        with Stopwatch() as sw:
            popularity = evaluate_popularity(split, selection)
        popularity_runs.append({**_metrics(popularity), "train_seconds": sw.seconds, "samples_per_second": None,
                                "split_seed": split_seed})
    rows = [{"method": method, "description": description, **_summary(runs[method])}
            for method, _, description in methods]
    rows.append({"method": "popularity", "description": "training listeners per artist", **_summary(popularity_runs)})
    return {
        "dataset": name, "path": str(path), "users": data.num_users, "artists": data.num_artists,
        "interactions": data.num_interactions, "train_interactions": train_interactions[0],
        "heldout_users": heldout[0], "evaluated_users": evaluated[0],
        "split_seeds": list(settings.quality_split_seeds), "rows": rows, "notes": notes,
    }


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def run(settings: BenchSettings, workdir: Path) -> dict:
    """The quality part: every data set of ``settings.quality_datasets`` that is present."""
    names, notes = present_datasets(settings, settings.quality_datasets)
    return {"datasets": [evaluate_dataset(name, settings) for name in names], "notes": notes}
