"""Reports of the conformance harness and their text.

:class:`PairCheck` is the test of one suite pair (Pearson statistic, p-value at level α/K,
tokens, accepted drafts against the token-wise optimum, smallest detectable TV, support
violations, closest simple law of a failed pair); :class:`ConformanceReport`, what
:func:`sim.conformance.check_verifier` returns, gathers them with the Bonferroni p-value over the
K pairs, the efficiency (accepted drafts ÷ the token-wise optimum) and the smallest TV detected
with power :data:`POWER`, and prints as a table.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Power at which ``min_detectable_tv`` and :func:`detection_rounds` are stated.
POWER = 0.9


@dataclass(frozen=True)
class PairCheck:
    """The test of one suite pair."""

    name: str
    passed: bool  #: at level alpha / K
    p_value: float
    statistic: float
    degrees_of_freedom: int
    generations: int
    rounds: int
    tokens: int
    accepted: int  #: accepted draft tokens, all rounds
    optimum: float  #: E[accepted] under standard verification from the same round starts
    min_detectable_tv: float
    #: (position, context, token, count) of tokens emitted where q = 0, most frequent first
    #: (at most 10 distinct; ``support_count`` counts them all)
    support_violations: tuple
    support_count: int = 0
    closest_law: str = ""  #: for a failed pair: the best-fitting simple alternative, if any

    @property
    def efficiency(self) -> float:
        return _ratio(self.accepted, self.optimum)


def _ratio(accepted, optimum) -> float:
    if optimum > 0:
        return accepted / optimum
    return 1.0 if accepted == 0 else float("inf")


@dataclass(frozen=True)
class ConformanceReport:
    """Result of :func:`check_verifier`.

    ``passed`` — the emitted-token law equals the target's at false-positive level ``alpha``;
    ``p_value`` — Bonferroni over the pairs (K · the least pair p-value, at most 1);
    ``efficiency`` — accepted drafts ÷ the token-wise optimum, all rounds;
    ``min_detectable_tv`` — per-position TV detected with power ≥ 0.9 at this size;
    ``checks`` — one :class:`PairCheck` per suite pair;
    ``level`` — ``"token"`` (the law of each token given its prefix, pooled per (position,
    context)) or ``"sequence"`` (the law of whole generations; ``min_detectable_tv`` is then a
    TV of whole sequences).
    """

    verifier: str
    window: int
    alpha: float
    passed: bool
    p_value: float
    efficiency: float
    min_detectable_tv: float
    checks: tuple[PairCheck, ...]
    level: str = "token"

    @property
    def rounds(self) -> int:
        return sum(check.rounds for check in self.checks)

    @property
    def support_violations(self) -> tuple:
        return tuple((check.name, *violation) for check in self.checks
                     for violation in check.support_violations)

    def table(self) -> list[dict]:
        """The per-pair table as a list of dicts (for pandas or JSON)."""
        return [{"pair": c.name, "passed": c.passed, "p_value": c.p_value,
                 "statistic": c.statistic, "dof": c.degrees_of_freedom, "rounds": c.rounds,
                 "tokens": c.tokens, "efficiency": c.efficiency,
                 "min_detectable_tv": c.min_detectable_tv,
                 "support_violations": c.support_count, "closest_law": c.closest_law}
                for c in self.checks]

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        relation = "≥" if self.passed else "<"
        lines = [f"{self.verifier}, γ = {self.window}: {verdict} (p = {self.p_value:.3g} "
                 f"{relation} α = {self.alpha:g}); {self.rounds} rounds; efficiency "
                 f"{self.efficiency:.4f} of the token-wise optimum; detects a "
                 f"{'per-position' if self.level == 'token' else 'sequence'} TV "
                 f"≥ {self.min_detectable_tv:.3g} with power {POWER}",
                 f"  {'pair':<14}{'rounds':>8}{'tokens':>8}{'χ²':>10}{'dof':>6}"
                 f"{'p-value':>11}{'efficiency':>11}{'min TV':>8}"]
        for c in self.checks:
            lines.append(f"  {c.name:<14}{c.rounds:>8}{c.tokens:>8}{c.statistic:>10.1f}"
                         f"{c.degrees_of_freedom:>6}{c.p_value:>11.3g}{c.efficiency:>11.4f}"
                         f"{c.min_detectable_tv:>8.3f}")
        for name, position, context, token, count in self.support_violations[:10]:
            lines.append(f"  support: {name}: token {token} emitted at position {position} in "
                         f"context {context} ({count}×), where the target gives it "
                         "probability 0")
        for c in self.checks:
            if c.closest_law:
                lines.append(f"  {c.name}: closest simple law: {c.closest_law}")
        return "\n".join(lines)
