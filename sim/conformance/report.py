"""Reports of the conformance harness and their text.

:class:`PairCheck` is the test of one suite pair (Pearson statistic, p-value at level α/K,
tokens, accepted drafts against the token-wise optimum, smallest detectable TV, support
violations, closest simple law of a failed pair); :class:`ConformanceReport`, what
:func:`sim.conformance.check_verifier` returns, gathers them with the Bonferroni p-value over the
K pairs, the efficiency (accepted drafts ÷ the token-wise optimum) and the smallest TV detected
with power :data:`POWER`, and prints as a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Power at which ``min_detectable_tv`` and :func:`detection_rounds` are stated.
POWER = 0.9
#: The verdicts of a report, and the CLI's exit status for each (``specdec check-verifier``).
VERDICTS = {"passed": 0, "failed": 1, "inconclusive": 3}


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
    closest_law: str = ""  #: for a failed pair: a mixture w·q + (1 − w)·p that fits, if any
    #: per-position TV this run's size detects with power 0.9 under the target's expected
    #: visits (:mod:`sim.conformance.verdicts`; inf: too few counts to test)
    design_tv: float = math.inf
    powered: bool = True  #: held to ``min_tv`` (the suite pair's ``powered``)
    #: for a failed pair: (position, estimated TV, low, high) per position (bias-corrected,
    #: 95% basic-bootstrap interval, :mod:`sim.conformance.deviations`)
    tv_estimates: tuple = ()

    @property
    def efficiency(self) -> float:
        return _ratio(self.accepted, self.optimum)


def _ratio(accepted, optimum) -> float:
    if optimum != optimum:  # NaN: the optimum could not be computed (a large tree pair)
        return float("nan")
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
    TV of whole sequences);
    ``verdict`` — ``"passed"`` (no deviation, and every pair held to ``min_tv`` detects a TV of
    ``min_tv`` with power 0.9), ``"failed"`` (a deviation, whatever the power) or
    ``"inconclusive"`` (no deviation found, but the run was too small to find one of
    ``min_tv``; ``rounds_needed`` says how many rounds would do); ``passed`` is
    ``verdict == "passed"``;
    ``deviations`` — for a failed run, the most significant (pair, position, context, token)
    cells (:class:`sim.conformance.deviations.Deviation`).
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
    verdict: str = ""
    min_tv: float = 0.05
    rounds_needed: int | None = None  #: for an inconclusive run: rounds that reach min_tv
    deviations: tuple = ()

    @property
    def detectable_tv(self) -> float:
        """The largest design TV (power 0.9) over the pairs held to ``min_tv``."""
        return max((c.design_tv for c in self.checks if c.powered), default=math.inf)

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
                 "support_violations": c.support_count, "closest_law": c.closest_law,
                 "design_tv": c.design_tv, "powered": c.powered}
                for c in self.checks]

    def __str__(self) -> str:
        return "\n".join([self._headline(), *self._table(), *self._where()])

    def _headline(self) -> str:
        what = "per-position" if self.level == "token" else "sequence"
        head = f"{self.verifier}, γ = {self.window}: {self.verdict.upper()}"
        efficiency = f"efficiency {self.efficiency:.4f} of the token-wise optimum"
        tail = f"{self.rounds} rounds; {efficiency}"
        if self.verdict == "failed":
            return (f"{head} — the emitted tokens deviate from the target law (p = "
                    f"{self.p_value:.3g} < α = {self.alpha:g}); {tail}")
        found = f"p = {self.p_value:.3g} ≥ α = {self.alpha:g}"
        if self.verdict == "passed":
            weakest = max((c for c in self.checks if c.powered), key=lambda c: c.design_tv)
            return (f"{head} — no deviation from the target law ({found}), and every pair "
                    f"detects a {what} TV of {self.min_tv:g} with power {POWER} (weakest: "
                    f"{weakest.name}, {weakest.design_tv:.3g}); {tail}")
        short = [c.name + (" (too few tokens to test)" if math.isinf(c.design_tv)
                           else f" (detects {c.design_tv:.3g})")
                 for c in self.checks if c.powered and not c.design_tv <= self.min_tv]
        needed = (f"about {self.rounds_needed:,} rounds are needed (n_rounds, --rounds)"
                  if self.rounds_needed is not None else "no run size reaches it on these pairs")
        return (f"{head} — no deviation found ({found}), but {self.rounds} rounds cannot detect "
                f"a {what} TV of {self.min_tv:g} with power {POWER} on {', '.join(short)}; "
                f"{needed}, or raise min_tv; {efficiency}")

    def _table(self) -> list[str]:
        lines = [f"  {'pair':<14}{'rounds':>8}{'tokens':>8}{'χ²':>10}{'dof':>6}"
                 f"{'p-value':>11}{'efficiency':>11}{'detects TV':>11}"]
        for c in self.checks:
            mark = "" if c.powered else "*"
            lines.append(f"  {c.name:<14}{c.rounds:>8}{c.tokens:>8}{c.statistic:>10.1f}"
                         f"{c.degrees_of_freedom:>6}{c.p_value:>11.3g}{c.efficiency:>11.4f}"
                         f"{c.design_tv:>10.3f}{mark or ' '}")
        if not all(c.powered for c in self.checks):
            lines.append("  * tested, not held to min_tv (there for the support check)")
        return lines

    def _where(self) -> list[str]:
        lines = []
        for name, position, context, token, count in self.support_violations[:10]:
            lines.append(f"  support: {name}: token {token} emitted at position {position} in "
                         f"context {context} ({count}×), where the target gives it "
                         "probability 0")
        for deviation in self.deviations:
            lines.append(f"  where: {deviation}")
        return lines + check_lines(self.checks)


def check_lines(checks) -> list[str]:
    """The lines of a failed report that each :class:`PairCheck` adds: its largest estimated TV
    per position and its closest simple law."""
    lines = []
    for c in checks:
        if c.tv_estimates:
            position, estimate, low, high = max(c.tv_estimates, key=lambda e: e[1])
            lines.append(f"  {c.name}: largest estimated TV at position {position}: "
                         f"{estimate:.3f} (bias-corrected; 95% basic-bootstrap interval "
                         f"{low:.3f} – {high:.3f})")
        if c.closest_law:
            lines.append(f"  {c.name}: closest simple law: {c.closest_law}")
    return lines
