"""BPR hyperparameters: documented defaults, validated ranges, and the notebook preset.

The first seven fields mirror ``Hyperparameters`` in ``protos/musicrec/v1/model.proto``; the rest
are trainer-internal knobs (the gRPC API leaves them at their defaults). No TensorFlow here.

The defaults come from measured levers on HetRec Last.fm 2K and MovieLens small with the
leave-one-out protocol of ``trainer_service.evaluation``, judged by the mean over 5 random splits
(split seeds 201..205, never the ones the benchmark reports), a change adopted only if it also
wins on a second set of unseen splits (206..210); the tables and the commands are in
docs/levers.md and docs/levers-confirm.md, the reasons in docs/training.md. What mattered:
rank-aware negatives (the hardest of 8 uniform candidates), L2 raised with them (0.02; hard
negatives overfit with less), and a cosine learning-rate decay from a higher start (0.25), which
together reach a better model in 40 epochs than plain BPR in 200; then a small initialization
(std 0.01), bias L2, and positives weighted by log(1 + plays). The factor count is chosen from
the data (``auto_factors``: 96 where listeners average at least ``DENSE_MIN_PLAYS_PER_LISTENER``
interactions, 64 otherwise; docs/training.md, "Factors chosen from the data"). Bigger data needs
fewer epochs (pass ``epochs``).

The objective of one sampled triple (user u, listened artist i, unlistened artist j), with
``x = p_u . (q_i - q_j) + b_i - b_j``, is::

    -log sigmoid(x) + regularization / 2 * (|p_u|^2 + |q_i|^2 + |q_j|^2)
                    + bias_regularization / 2 * (b_i^2 + b_j^2)

so the L2 term's gradient is ``regularization * theta`` (Rendle et al. 2009's convention).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

NEGATIVE_SAMPLING = ("uniform", "popularity")
OPTIMIZERS = ("sgd", "adagrad")
POSITIVE_SAMPLING = ("uniform", "log_plays")
LEARNING_RATE_SCHEDULES = ("constant", "linear", "cosine")

#: ``factors`` value meaning "chosen from the data" (``Hyperparameters.resolved``).
AUTO_FACTORS = 0
#: The factor counts ``auto_factors`` chooses, and the rule between them: a training whose data
#: (source plus play log, as loaded) holds at least ``DENSE_MIN_PLAYS_PER_LISTENER`` interactions
#: per listener on average gets ``DENSE_DATA_FACTORS``, other data ``SPARSE_DATA_FACTORS``.
#: 96 factors were ahead of 64 on both real data sets, paired over 20 unseen splits
#: (docs/levers-wide.md): MovieLens small (165 interactions per listener) +0.0067 ± 0.0018 HR@10,
#: Last.fm 2K (49 per listener) +0.0034 ± 0.0013. What a wider model costs lies on the side of
#: short histories: a listener's factors folded in from a few plays (RecommendForHistory, the
#: live overlay for new listeners) gain nothing from the width while the retrain they are
#: measured against does, and a warm start knocks a converged wider model below a cold one's
#: 0.98x on Last.fm 2K (docs/training.md). Dense data, where every listener's row is fitted from
#: many plays, takes the width; sparse data keeps 64, as do the synthetic presets (20 to 49 per
#: listener) and so the scale targets. The line lies between the two measured densities.
DENSE_DATA_FACTORS = 96
SPARSE_DATA_FACTORS = 64
DENSE_MIN_PLAYS_PER_LISTENER = 100


def auto_factors(num_interactions: int, num_users: int, dense_min_plays_per_listener: float | None = None) -> int:
    """The factor count for a training on ``num_interactions`` interactions of ``num_users``
    listeners: ``DENSE_DATA_FACTORS`` when they average at least ``dense_min_plays_per_listener``
    (None: ``DENSE_MIN_PLAYS_PER_LISTENER``) interactions each, else ``SPARSE_DATA_FACTORS``."""
    line = DENSE_MIN_PLAYS_PER_LISTENER if dense_min_plays_per_listener is None else dense_min_plays_per_listener
    dense = num_users > 0 and num_interactions >= line * num_users
    return DENSE_DATA_FACTORS if dense else SPARSE_DATA_FACTORS


# Inclusive ranges; floats must be finite. Upper bounds keep a request from asking for a model
# that cannot fit in memory or a job that never ends.
_INT_RANGES = {
    "factors": (AUTO_FACTORS, 1024),
    "epochs": (1, 10_000),
    "batch_size": (1, 1 << 20),
    "seed": (-(2**63), 2**63 - 1),
    "negative_candidates": (1, 64),
}
_FLOAT_RANGES = {
    "learning_rate": (0.0, 100.0),  # exclusive of 0
    "regularization": (0.0, 100.0),
    "bias_regularization": (0.0, 100.0),
    "init_std": (0.0, 10.0),  # exclusive of 0
}
_POSITIVE_FLOATS = ("learning_rate", "init_std")
_CHOICES = {
    "negative_sampling": NEGATIVE_SAMPLING,
    "optimizer": OPTIMIZERS,
    "positive_sampling": POSITIVE_SAMPLING,
    "learning_rate_schedule": LEARNING_RATE_SCHEDULES,
}


@dataclass(frozen=True)
class Hyperparameters:
    """Everything that decides a trained model besides the data. Validated on construction
    (``ValueError`` naming the field and its range).

    - ``factors``: latent factors per user and per artist (embedding width), 1..1024, or
      ``AUTO_FACTORS`` (0, the default): chosen from the data once it is loaded (``resolved``):
      96 where listeners average at least ``DENSE_MIN_PLAYS_PER_LISTENER`` (100) interactions,
      64 otherwise, and a warm start keeps its base version's count. Each factor adds a float to
      every row the step reads and writes: the cost of a triple grows with it.
    - ``epochs``: passes over the training interactions; one epoch is N sampled triples for N
      training interactions. Default 40 (tuned on Last.fm 2K and MovieLens small; large data
      needs fewer).
    - ``learning_rate``: step size (> 0). For "sgd", each triple moves its rows by
      ``learning_rate * gradient`` (updates of a minibatch are summed, not averaged).
      Default 0.25 (decayed by ``learning_rate_schedule``).
    - ``regularization``: L2 strength on the user and artist factors of each triple. Default 0.02.
    - ``bias_regularization``: L2 strength on the artist biases of each triple. Default 0.03.
    - ``batch_size``: triples per gradient step. Default 1024.
    - ``seed``: seeds initialization, sampling and the evaluation split (64-bit). Default 0.
    - ``negative_sampling``: "uniform" (default): an artist drawn uniformly from those the user
      never listened to (Rendle et al. 2009). "popularity": the notebook's sampler, an artist drawn
      in proportion to its listeners, the user's own artists not excluded.
    - ``positive_sampling``: "log_plays" (default): the (user, artist) pair is drawn from the
      interactions in proportion to ``log(1 + plays)``. "uniform": drawn uniformly (a bootstrap,
      as in Rendle et al. and the notebook).
    - ``optimizer``: "sgd" (default): plain SGD with sparse updates. "adagrad": Adagrad as Keras
      implements it (accumulator starts at 0.1), on the minibatch's summed gradients.
    - ``init_std``: standard deviation of the normal initialization of the factors. Default 0.01.
      Biases start at 0.
    - ``negative_candidates``: rank-aware negatives (dynamic negative sampling, Zhang et al.
      SIGIR 2013; in the spirit of Rendle and Freudenthaler WSDM 2014's adaptive sampler): each
      triple draws this many negatives (each as ``negative_sampling`` says) and trains on the one
      the current model scores highest, the most informative of them. 1 = plain BPR. 1..64.
      Default 8. Each extra candidate adds an artist row read (and scored) per triple: the
      default's triples cost more than plain BPR's (docs/training.md measures how much).
    - ``learning_rate_schedule``: how the step size moves over the run, from ``learning_rate``
      at the start: "constant"; "linear" decay to 0 at the end of the last epoch; "cosine" decay
      to 0. Applied per training call (at most ``trainer_service.bpr.TRIPLES_PER_CALL`` triples).
      Default "cosine".
    """

    factors: int = AUTO_FACTORS
    epochs: int = 40
    learning_rate: float = 0.25
    regularization: float = 0.02
    bias_regularization: float = 0.03
    batch_size: int = 1024
    seed: int = 0
    negative_sampling: str = "uniform"
    positive_sampling: str = "log_plays"
    optimizer: str = "sgd"
    init_std: float = 0.01
    negative_candidates: int = 8
    learning_rate_schedule: str = "cosine"

    def __post_init__(self) -> None:
        for name, (low, high) in _INT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                    object.__setattr__(self, name, value)
                else:
                    raise ValueError(f"{name} must be an integer, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
        for name, (low, high) in _FLOAT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            value = float(value)
            object.__setattr__(self, name, value)
            if not math.isfinite(value) or not low <= value <= high or (name in _POSITIVE_FLOATS and value == 0):
                bound = "(" if name in _POSITIVE_FLOATS else "["
                raise ValueError(f"{name} must be in {bound}{low:g}, {high:g}], got {value!r}")
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")

    @property
    def is_resolved(self) -> bool:
        """Whether ``factors`` is a concrete count (not ``AUTO_FACTORS``): what a trainer needs."""
        return self.factors != AUTO_FACTORS

    def resolved(self, num_interactions: int, num_users: int, *, base_factors: int | None = None) -> "Hyperparameters":
        """These hyperparameters with concrete ``factors`` for a training that loaded
        ``num_interactions`` interactions of ``num_users`` listeners: given factors are kept;
        ``AUTO_FACTORS`` becomes ``base_factors`` (the count of the version a warm start starts
        from; None: no warm start), else ``auto_factors(num_interactions, num_users)``."""
        if self.is_resolved:
            return self
        factors = base_factors if base_factors is not None else auto_factors(num_interactions, num_users)
        return dataclasses.replace(self, factors=factors)

    def with_overrides(self, **overrides: Any) -> "Hyperparameters":
        """A copy with ``overrides`` applied and validated. Unknown names raise ValueError."""
        unknown = sorted(set(overrides) - {field.name for field in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown hyperparameter(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name (``Hyperparameters(**h.to_dict()) == h``); JSON-able."""
        return dataclasses.asdict(self)

    def manifest_dict(self) -> dict[str, float | int]:
        """The hyperparameters as the manifest records them (resolved ones: ``factors`` concrete;
        ValueError otherwise): numbers only. The choice fields are
        recorded as flags: ``popularity_negatives``, ``log_plays_positives``, ``adagrad`` (1 or 0), and
        ``learning_rate_schedule`` as its index in ``LEARNING_RATE_SCHEDULES`` (0 constant)."""
        if not self.is_resolved:
            raise ValueError("factors are chosen from the data: resolve the hyperparameters first")
        numbers: dict[str, float | int] = {
            name: value for name, value in self.to_dict().items() if name not in _CHOICES
        }
        numbers["popularity_negatives"] = int(self.negative_sampling == "popularity")
        numbers["log_plays_positives"] = int(self.positive_sampling == "log_plays")
        numbers["adagrad"] = int(self.optimizer == "adagrad")
        numbers["learning_rate_schedule"] = LEARNING_RATE_SCHEDULES.index(self.learning_rate_schedule)
        return numbers


# The original notebook's recipe, kept as a reference row for benchmarks: 32 factors, 10 epochs,
# Adagrad 0.1, batches of 4096, l2 0.01 on the sum of squares (0.02 in this module's
# regularization / 2 convention), no bias L2, popularity negatives that may hit the user's own
# artists, uniform(-1/32, 1/32) initialization (the same standard deviation as a normal here).
NOTEBOOK = Hyperparameters(
    factors=32,
    epochs=10,
    learning_rate=0.1,
    regularization=0.02,
    bias_regularization=0.0,
    batch_size=4096,
    negative_sampling="popularity",
    positive_sampling="uniform",
    optimizer="adagrad",
    init_std=1.0 / (32 * math.sqrt(3.0)),
    negative_candidates=1,
    learning_rate_schedule="constant",
)

#: Named starting points; ``--preset NAME`` starts from one and applies the flags on top.
PRESETS: dict[str, Hyperparameters] = {"default": Hyperparameters(), "notebook": NOTEBOOK}
