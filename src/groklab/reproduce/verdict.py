"""Verdicts: the words a claim's row may carry, and how several checks' outcomes combine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
PARTIAL = "partial"
INCONCLUSIVE = "inconclusive"      # ran, but the budget was too small to decide (say why)
NOT_RUN = "not run"                # runs missing from the store (or data missing)
NEEDS_CLUSTER = "needs GPU/cluster"  # the size exceeds the stated CPU budget and was not run
NEEDS_PROTOCOL = "needs protocol"  # groklab cannot yet run what the claim needs

VERDICTS = (REPRODUCED, PARTIAL, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN, NEEDS_CLUSTER, NEEDS_PROTOCOL)

# When several checks judge one claim, the combined verdict is the first of these that any check
# gave: a missing run outranks everything, then a failure, then doubt, then a partial result.
_PRECEDENCE = (NEEDS_PROTOCOL, NEEDS_CLUSTER, NOT_RUN, NOT_REPRODUCED, INCONCLUSIVE, PARTIAL, REPRODUCED)


@dataclass(frozen=True)
class Outcome:
    """One check's verdict, the measured figure in words, and the numbers behind it."""

    verdict: str
    measured: str
    figures: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r} must be one of {', '.join(VERDICTS)}")


def combine(outcomes: Sequence[Outcome]) -> Outcome:
    """The verdict of several checks (see `_PRECEDENCE`), their measured figures joined."""
    if not outcomes:
        return Outcome(NOT_RUN, "no checks")
    verdict = next(v for v in _PRECEDENCE if any(o.verdict == v for o in outcomes))
    figures: dict = {}
    for i, o in enumerate(outcomes):
        figures.update({(k if len(outcomes) == 1 else f"{i}.{k}"): v for k, v in o.figures.items()})
    return Outcome(verdict, "; ".join(o.measured for o in outcomes), figures)
