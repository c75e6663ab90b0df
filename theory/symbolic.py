r"""Symbolic identities (sympy): what the numerical code relies on, proved for small cases.

* :func:`one_step_unbiasedness` — P(out = x) = q(x) for speculative sampling at one position,
  for every x, in every region of the simplex (case split on the set A = {x : q(x) > p(x)}),
  with Σp = Σq = 1 substituted.  In region A the output law is
  min(p, q)(x) + (Σ_{y∉A} (p_y − q_y)) · [q − p]₊(x) / Σ_{y∈A} (q_y − p_y).
* :func:`leviathan_identity` — the round length L of ``Speculative(window=γ)`` on a
  context-free pair with acceptance α has P(L = k) = α^{k−1}(1 − α) (k ≤ γ) and
  P(L = γ + 1) = α^γ; its mean is Leviathan et al.'s (1 − α^{γ+1}) / (1 − α).
* :func:`pareto_pointwise_identity` — |q − bp| + (1 − b)p = |p − q| whenever
  bp ≥ min(p, q), the step behind Theorem 5's straight Pareto line.
* :func:`leviathan_walltime_factor`, :func:`optimal_window` — the speedup
  (1 − α^{γ+1}) / ((1 − α)(γc + 1)) with cost ratio c, and the best γ.
"""

from __future__ import annotations

import itertools

import sympy as sp

__all__ = [
    "leviathan_expected_tokens",
    "leviathan_identity",
    "leviathan_walltime_factor",
    "one_step_unbiasedness",
    "optimal_window",
    "pareto_pointwise_identity",
]

alpha, gamma, cost = sp.symbols("alpha gamma c", positive=True)


def one_step_unbiasedness(vocab_size: int) -> dict:
    """Map each region A (tokens with q > p; non-empty, proper) to the simplified residual
    P(out = x) − q(x) for every token x.  All residuals are 0.

    Examples
    --------
    >>> from theory.symbolic import one_step_unbiasedness
    >>> regions = one_step_unbiasedness(3)
    >>> len(regions), all(r == 0 for res in regions.values() for r in res)
    (6, True)
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2; got {vocab_size}")
    p = list(sp.symbols(f"p0:{vocab_size}", positive=True))
    q = list(sp.symbols(f"q0:{vocab_size}", positive=True))
    # Σp = Σq = 1: eliminate the last coordinate of each.
    substitution = {p[-1]: 1 - sum(p[:-1]), q[-1]: 1 - sum(q[:-1])}
    results = {}
    for size in range(1, vocab_size):
        for region in itertools.combinations(range(vocab_size), size):
            inside = set(region)
            smaller = [p[x] if x in inside else q[x] for x in range(vocab_size)]
            residual = [q[x] - p[x] if x in inside else 0 for x in range(vocab_size)]
            reject = sum(p[y] - q[y] for y in range(vocab_size) if y not in inside)
            residual_mass = sum(q[y] - p[y] for y in inside)
            out = [smaller[x] + reject * residual[x] / residual_mass for x in range(vocab_size)]
            results[region] = [sp.simplify((out[x] - q[x]).subs(substitution))
                               for x in range(vocab_size)]
    return results


def leviathan_expected_tokens(window=gamma, acceptance=alpha):
    """(1 − α^{γ+1}) / (1 − α): expected tokens per round (Leviathan et al. 2023, eq. 1)."""
    return (1 - acceptance ** (window + 1)) / (1 - acceptance)


def leviathan_identity():
    """Σ_k k P(L = k) − (1 − α^{γ+1})/(1 − α), simplified for symbolic γ and α ≠ 1: returns 0.

    Examples
    --------
    >>> from theory.symbolic import leviathan_identity
    >>> leviathan_identity()
    0
    """
    k = sp.symbols("k", integer=True, positive=True)
    mean = sp.summation(k * alpha ** (k - 1) * (1 - alpha), (k, 1, gamma)) \
        + (gamma + 1) * alpha ** gamma
    difference = sp.simplify(mean - leviathan_expected_tokens())
    if isinstance(difference, sp.Piecewise):  # sympy splits off α = 1, where 1 − α = 0
        difference = next(expr for expr, condition in difference.args if condition is sp.true)
    return sp.simplify(difference)


def leviathan_walltime_factor(acceptance, window, cost_ratio):
    """(1 − α^{γ+1}) / ((1 − α)(γc + 1)), Leviathan et al.'s expected walltime improvement."""
    return leviathan_expected_tokens(window, acceptance) / (window * cost_ratio + 1)


def optimal_window(acceptance: float, cost_ratio: float, max_window: int = 64) -> int:
    """The window γ in 1..max_window maximizing :func:`leviathan_walltime_factor`.

    Examples
    --------
    >>> from theory.symbolic import optimal_window
    >>> optimal_window(0.8, 0.05)  # (1 − 0.8⁹)/(0.2 · 1.4) = 3.09 beats γ = 7 (3.08), 9 (3.08)
    8
    """
    if not 0 <= acceptance < 1:
        raise ValueError(f"acceptance must be in [0, 1); got {acceptance!r}")
    if not cost_ratio >= 0:
        raise ValueError(f"cost_ratio must be >= 0; got {cost_ratio!r}")
    return max(range(1, max_window + 1),
               key=lambda w: float(leviathan_walltime_factor(acceptance, w, cost_ratio)))


def pareto_pointwise_identity() -> dict:
    r"""|q − bp| + (1 − b)p − |p − q|, simplified in both cases of bp ≥ min(p, q): all 0.

    * p ≤ q: b p ≥ p forces b = 1;
    * p > q: write b p = q + s with 0 ≤ s ≤ p − q, and p = q + d with d > 0.

    Examples
    --------
    >>> from theory.symbolic import pareto_pointwise_identity
    >>> pareto_pointwise_identity()
    {'p <= q': 0, 'p > q': 0}
    """
    p, q, s, d = sp.symbols("p q s d", positive=True)
    b = sp.symbols("b", positive=True)

    def residual(p_, q_, b_):
        return sp.Abs(q_ - b_ * p_) + (1 - b_) * p_ - sp.Abs(p_ - q_)

    low = residual(p, p + d, 1)  # q = p + d ≥ p, b = 1
    high_p = q + d
    high = residual(high_p, q, (q + s) / high_p)
    # on the case's domain s ≤ d: |q − bp| = s and |p − q| = d
    high = high.subs(sp.Abs(-s), s).subs(sp.Abs(d), d)
    return {"p <= q": sp.simplify(low.subs(b, 1)), "p > q": sp.simplify(high)}
