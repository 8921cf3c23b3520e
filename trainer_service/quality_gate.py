"""The quality gate: may an evaluated model be published? Pure rules, no I/O, gRPC or TensorFlow.

A model is published only when both hold (mode "on", the default):

1. its leave-one-out HR@10 is **above** the popularity baseline's on the same held-out users
   (a model that ranks worse than "most listened first" is worse than no personalization);
2. it is **not more than** ``max_relative_drop`` (10%) **below the newest published version's**
   HR@10, when that version was trained on the **same kind of source** (``source_kind``).

"Same kind of source" compares the manifests' ``data.source`` descriptions with the synthetic
generator's seed removed: the same files (format and path; a new data drop in the same files is
exactly what the comparison is for), or synthetic data of the same size preset (seeds draw
from one distribution). Anything else (another data set, another synthetic size) is not
comparable, and only rule 1 applies. Only the newest version is compared, whatever its kind:
it is what the index serves now.

Mode "off" publishes anyway; the decision (figures and verdict) is still made and recorded in the
manifest, so a version published over the gate's objection says so.

A refusal is ``QualityGateRefused``: a ``FailedPrecondition`` (the state of the models, not the
request, is what stops it), whose message gives both figures compared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from model_store.format import Manifest
from musicrec.rpc.errors import FailedPrecondition

GATE_MODES = ("on", "off")
DEFAULT_MAX_RELATIVE_DROP = 0.10
_SYNTHETIC_SEED = re.compile(r"^(synthetic .*) \(seed -?\d+\)$")
_LOG_POSITION = re.compile(r" \+ play log through position \d+$")


def without_log_position(data_source: str) -> str:
    """A manifest's ``data.source`` without the play log's " + play log through position N"
    (``trainer_service.data.log_plays``): retrains of one source as the log grows are one source."""
    return _LOG_POSITION.sub("", data_source)


def source_kind(data_source: str) -> str:
    """The comparable kind of a manifest's ``data.source``: the description without the play
    log's position and the synthetic seed ("synthetic small (seed 7)" -> "synthetic small");
    file sources are their description (format and path)."""
    data_source = without_log_position(data_source)
    match = _SYNTHETIC_SEED.match(data_source)
    return match.group(1) if match else data_source


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and on which figures (HR@10 values are fractions in [0, 1]).

    ``passed``: the rules' verdict; ``publishes``: whether the pipeline goes on to publish
    (passed, or mode "off"). ``previous_version`` is 0 when no comparable version was compared.
    ``reason``: one line with the figures compared."""

    mode: str
    passed: bool
    reason: str
    hit_rate_at_10: float
    popularity_hit_rate_at_10: float
    previous_version: int = 0
    previous_hit_rate_at_10: float = 0.0
    max_relative_drop: float = DEFAULT_MAX_RELATIVE_DROP

    @property
    def publishes(self) -> bool:
        return self.passed or self.mode == "off"

    def figures(self) -> dict[str, float | int]:
        """The numbers compared, as the manifest's ``training.gate.figures`` records them."""
        figures: dict[str, float | int] = {
            "hit_rate_at_10": self.hit_rate_at_10,
            "popularity_hit_rate_at_10": self.popularity_hit_rate_at_10,
            "max_relative_drop": self.max_relative_drop,
        }
        if self.previous_version:
            figures["previous_version"] = self.previous_version
            figures["previous_hit_rate_at_10"] = self.previous_hit_rate_at_10
        return figures


class QualityGateRefused(FailedPrecondition):
    """The gate refused to publish the model; ``decision`` holds the figures. Nothing was published."""

    def __init__(self, decision: GateDecision):
        super().__init__(f"quality gate refused the model: {decision.reason}; nothing was published "
                         f"(turn the gate off to publish anyway)")
        self.decision = decision


def decide(metrics: Mapping[str, float | int], data_source: str, newest: Manifest | None, *,
           mode: str = "on", max_relative_drop: float = DEFAULT_MAX_RELATIVE_DROP) -> GateDecision:
    """The gate's decision for a model with these evaluation ``metrics`` (manifest key names:
    ``hit_rate_at_10``, ``popularity_hit_rate_at_10``, ``evaluated_users``) trained on
    ``data_source`` (the manifest's description), given the ``newest`` published version's
    manifest (None: nothing published)."""
    if mode not in GATE_MODES:
        raise ValueError(f"gate must be one of {', '.join(GATE_MODES)}; got {mode!r}")
    if not 0.0 <= max_relative_drop < 1.0:
        raise ValueError(f"max_relative_drop must be in [0, 1), got {max_relative_drop}")
    model = float(metrics["hit_rate_at_10"])
    popularity = float(metrics["popularity_hit_rate_at_10"])
    users = int(metrics.get("evaluated_users", 0))
    previous_version, previous = 0, 0.0
    if (newest is not None and "hit_rate_at_10" in newest.metrics
            and source_kind(newest.data_source) == source_kind(data_source)):
        previous_version, previous = newest.model_version, float(newest.metrics["hit_rate_at_10"])
    decision = dict(mode=mode, hit_rate_at_10=model, popularity_hit_rate_at_10=popularity,
                    previous_version=previous_version, previous_hit_rate_at_10=previous,
                    max_relative_drop=max_relative_drop)
    if not model > popularity:
        return GateDecision(passed=False, reason=(
            f"HR@10 {model:.4f} is not above the popularity baseline's {popularity:.4f} "
            f"(same {users:,} held-out users)"), **decision)
    floor = (1.0 - max_relative_drop) * previous
    if previous_version and model < floor:
        return GateDecision(passed=False, reason=(
            f"HR@10 {model:.4f} is more than {max_relative_drop:.0%} below version {previous_version}'s "
            f"{previous:.4f} (same kind of source; at least {floor:.4f} needed)"), **decision)
    reason = f"HR@10 {model:.4f} is above the popularity baseline's {popularity:.4f}"
    if previous_version:
        reason += f" and within {max_relative_drop:.0%} of version {previous_version}'s {previous:.4f}"
    else:
        reason += " (no published version of the same kind of source to compare with)"
    return GateDecision(passed=True, reason=reason, **decision)
