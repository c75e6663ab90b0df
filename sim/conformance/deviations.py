r"""Where a failed verifier deviates: the cells, their intervals, and the TV per position.

A failed pair's Pearson statistic says *that* the emitted law differs from the target; an
engine builder needs *where*.  For every (position n, context s, token x) the harness counted
kₙₛₓ tokens out of the Nₙₛ visits of the cell, where a lossless verifier draws Binomial(Nₙₛ,
qₙ(x|s)).  :func:`cell_deviations` ranks the cells by the two-sided exact binomial p-value of
kₙₛₓ (a token of target probability 0 that was emitted has p = 0) and gives, for each of the
most significant, the observed frequency k/N with its 95% Wilson score interval beside the
expected q.  The p-values are per cell, not corrected for the number of cells: they rank, the
pair's χ² test decides.

:func:`position_tv` estimates the per-position TV of the emitted law from the target.  The
plug-in TV̂ₙ = Σₛ (Nₙₛ / Nₙ) · ½ Σₓ |k/N − q|ₙₛₓ (contexts weighted by their visits) is biased
upward by sampling noise (of order √(V / N) per cell, even for a lossless verifier), so it is
bootstrapped: 200 nonparametric replicates (each cell's counts redrawn as Multinomial(Nₙₛ,
k/N), a fixed seed derived from the run's) give TV*; the reported estimate is the bias-corrected
2·TV̂ − mean(TV*) and the 95% interval the basic (reverse-percentile) one, [2·TV̂ − TV*₉₇.₅,
2·TV̂ − TV*₂.₅], both clipped at 0.  The correction is first order: with few visits per token
(the 10⁴-token pair) the interval is rough.  Both are computed for failed pairs at
``level="token"`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binom, norm

#: Cells listed per report (the most significant first).
MAX_DEVIATIONS = 10
#: Bootstrap replicates of :func:`position_tv`.
REPLICATES = 200


@dataclass(frozen=True)
class Deviation:
    """One (pair, position, context, token) cell of a failed pair."""

    pair: str
    position: int
    context: int
    token: int
    count: int  #: tokens x emitted in the cell
    visits: int  #: tokens emitted in the cell (any x)
    expected: float  #: q(x | position, context)
    low: float  #: 95% Wilson interval of the observed frequency
    high: float
    p_value: float  #: two-sided exact binomial, per cell (not corrected)

    @property
    def observed(self) -> float:
        return self.count / self.visits

    def __str__(self) -> str:
        return (f"{self.pair}: position {self.position}, context {self.context}, token "
                f"{self.token}: observed {self.count}/{self.visits} = {self.observed:.3f} "
                f"(95% interval {self.low:.3f} – {self.high:.3f}), expected {self.expected:.3f} "
                f"(binomial p = {self.p_value:.2g})")


def wilson_interval(count, visits, confidence: float = 0.95):
    """The Wilson score interval of a binomial proportion count / visits (arrays allowed)."""
    count, visits = np.asarray(count, dtype=np.float64), np.asarray(visits, dtype=np.float64)
    z = norm.ppf(0.5 + confidence / 2)
    share = count / visits
    centre = (share + z * z / (2 * visits)) / (1 + z * z / visits)
    half = z * np.sqrt(share * (1 - share) / visits + z * z / (4 * visits ** 2)) \
        / (1 + z * z / visits)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def cell_deviations(pair: str, counts: np.ndarray, q: np.ndarray,
                    limit: int = MAX_DEVIATIONS) -> tuple[Deviation, ...]:
    """The ``limit`` most significant cells of a (T, S, V) table of counts against q."""
    visits = np.broadcast_to(counts.sum(axis=-1, keepdims=True), counts.shape)
    seen = np.nonzero(visits > 0)
    k, n, p = counts[seen].astype(np.float64), visits[seen].astype(np.float64), q[seen]
    lower = binom.cdf(k, n, p)
    upper = binom.sf(k - 1, n, p)
    p_value = np.minimum(1.0, 2 * np.minimum(lower, upper))
    p_value[(p == 0) & (k > 0)] = 0.0
    order = np.lexsort((-np.abs(k / n - p), p_value))[:limit]
    low, high = wilson_interval(k[order], n[order])
    return tuple(Deviation(pair, int(seen[0][i]), int(seen[1][i]), int(seen[2][i]), int(k[i]),
                           int(n[i]), float(p[i]), float(lo), float(hi), float(p_value[i]))
                 for i, lo, hi in zip(order, low, high, strict=True))


def position_tv(counts: np.ndarray, q: np.ndarray, rng,
                replicates: int = REPLICATES) -> tuple[tuple[int, float, float, float], ...]:
    """(position, bias-corrected TV, 95% basic-bootstrap low, high) for every position with
    visits (module doc)."""
    out = []
    for position in range(counts.shape[0]):
        visits = counts[position].sum(axis=-1)
        total = int(visits.sum())
        if total == 0:
            continue
        estimate, boot = 0.0, np.zeros(replicates)
        for context in np.flatnonzero(visits):
            n = int(visits[context])
            share = counts[position, context] / n
            weight = n / total
            estimate += weight * 0.5 * float(np.abs(share - q[position, context]).sum())
            draws = rng.multinomial(n, share, size=replicates) / n
            boot += weight * 0.5 * np.abs(draws - q[position, context]).sum(axis=1)
        # bias-corrected estimate and basic (reverse-percentile) interval: the resamples'
        # excess over the plug-in estimates the plug-in's own excess over the truth
        low, high = 2 * estimate - np.quantile(boot, [0.975, 0.025])
        corrected = 2 * estimate - float(boot.mean())
        out.append((position, max(corrected, 0.0), max(float(low), 0.0), max(float(high), 0.0)))
    return tuple(out)
