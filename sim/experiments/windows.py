r"""Draft lengths: the optimal per-round window against the best fixed γ and Leviathan's rule.

With a drafted token costing c target calls, a round of window γ costs 1 + c γ and the
expected wall time of a generation is E[W] = E[target calls] + c E[drafted tokens].  The
exact MDP over (position, context) (:func:`theory.optimal_window_policy`) picks the window of
each round; it is compared with the best fixed window (0 … W, 0 being autoregressive
decoding) and with Leviathan et al.'s rule, the γ maximizing their i.i.d. speedup formula at
the mean acceptance α = 1 − E[N_rej]/T, by the speedup T / E[W] vs c, on the Fig. 2 chains
and a text n-gram pair.  The optimal policy is simulated at c = 0.05, 0.2 and its target
calls and N_rej checked against their exact laws.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from sim.engine import simulate
from sim.experiments.common import Experiment, Outcome, mean_row
from sim.experiments.plotting import COLORS, label_axes
from sim.models import fig2_pair, ngram_pair
from sim.stats import pmf_moments
from theory import (
    Speculative,
    expected_walltime,
    optimal_window_policy,
    rejection_pmf,
    target_calls_pmf,
    theorem1_rejections,
)
from theory.exact import walltime_components
from theory.symbolic import leviathan_walltime_factor

__all__ = ["MAX_WINDOW", "WINDOWS", "WINDOW_COSTS", "window_policies", "windows"]

#: Cost ratios c of the draft-length comparison (a drafted token costs c target calls).
WINDOW_COSTS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
MAX_WINDOW = 10


def _window_chain(draft, target, costs, max_window=MAX_WINDOW):
    """Speedup T / E[W] vs c: the optimal policy, the best fixed window (0 … W, 0 being
    autoregressive decoding), and Leviathan's rule (the γ maximizing his i.i.d. formula)."""
    horizon = target.horizon
    alpha = 1 - theorem1_rejections(draft, target) / horizon  # mean acceptance
    fixed = {w: walltime_components(draft, target, Speculative(window=w))
             for w in range(1, max_window + 1)}
    fixed[0] = (horizon, 0)  # window 0: autoregressive decoding
    series = {"cost": list(costs), "optimal": [], "best_fixed": [], "best_fixed_window": [],
              "leviathan": [], "leviathan_window": [], "alpha": alpha}
    for cost in costs:
        policy = optimal_window_policy(draft, target, cost_ratio=cost, max_window=max_window)
        series["optimal"].append(horizon / expected_walltime(draft, target, policy,
                                                             cost_ratio=cost))
        times = {w: calls + cost * drafted for w, (calls, drafted) in fixed.items()}
        best = min(times, key=times.get)
        series["best_fixed"].append(horizon / times[best])
        series["best_fixed_window"].append(best)
        rule = max(range(max_window + 1),  # γ = 0 gives 1: autoregressive
                   key=lambda w: float(leviathan_walltime_factor(alpha, w, cost)))
        series["leviathan"].append(horizon / times[rule])
        series["leviathan_window"].append(rule)
    return series


def windows(settings, rng) -> Outcome:
    """Optimal per-round draft lengths (exact MDP) vs the best fixed γ and Leviathan's rule, on
    the Fig. 2 chains and a text n-gram pair; the optimal policy simulated at c = 0.05, 0.2."""
    contexts = 100 if settings.quick else 300
    chains = {"Fig. 2 (paper's instance)": fig2_pair(50, instance="paper"),
              f"text n-gram (V=100, {contexts} contexts, T=32)": ngram_pair(
                  vocab_size=100, max_contexts=contexts, horizon=32)}
    # quick: three costs and windows up to 5 (the n-gram's fixed-window DPs dominate)
    costs, max_window = ((0.02, 0.1, 0.5), 5) if settings.quick else (WINDOW_COSTS, MAX_WINDOW)
    data = {"chains": {name: _window_chain(*pair, costs, max_window)
                       for name, pair in chains.items()}}
    draft, target = chains["Fig. 2 (paper's instance)"]
    rows = []
    for cost, stream in zip((0.05, 0.2), rng.spawn(2), strict=True):
        policy = optimal_window_policy(draft, target, cost_ratio=cost, max_window=MAX_WINDOW)
        result = simulate(draft, target, policy, n_trials=settings.trials // 4, rng=stream,
                          client=settings.client)
        for label, samples, pmf in (
                ("target calls", result.target_calls, target_calls_pmf(draft, target, policy)),
                ("N_rej", result.rejections, rejection_pmf(draft, target, policy))):
            mean, variance = pmf_moments(pmf)
            rows.append(mean_row(f"E[{label}] optimal windows c={cost}", samples, mean,
                                 variance))
    return Outcome(rows, data)


def window_policies(data, title):
    chains = data["chains"]
    figure, axes = plt.subplots(1, len(chains), figsize=(5.5 * len(chains), 4))
    for ax, (name, series) in zip(np.atleast_1d(axes), chains.items(), strict=True):
        cost = series["cost"]
        ax.plot(cost, series["optimal"], "-o", ms=4, color=COLORS[0],
                label="optimal per-round window (exact MDP)")
        ax.plot(cost, series["best_fixed"], "--s", ms=4, color=COLORS[1],
                label="best fixed window γ (exact)")
        ax.plot(cost, series["leviathan"], ":^", ms=4, color=COLORS[2],
                label=f"Leviathan's rule, α = {series['alpha']:.3f} (exact)")
        ax.axhline(1, color="0.6", lw=0.8, label="autoregressive")
        for c, value, window in zip(cost, series["best_fixed"], series["best_fixed_window"],
                                    strict=True):
            ax.annotate(f"γ={window}", (c, value), textcoords="offset points", xytext=(0, -6),
                        ha="center", va="top", fontsize=7, color=COLORS[1])
        ax.margins(y=0.12)  # room for the lowest γ label inside the axes
        # the costs themselves as ticks: a log axis over about one decade labels its minor
        # ticks too, and "2×10⁻²3×10⁻²…" overlap
        ax.set_xscale("log")
        ax.set_xticks(cost, [f"{c:g}" for c in cost])
        ax.xaxis.set_minor_formatter(NullFormatter())
        label_axes(ax, "cost ratio c (one drafted token = c target calls)",
                   "speedup T / E[wall time]", name)
    figure.suptitle(title)
    return figure


WINDOWS = Experiment("windows", windows, window_policies,
                     "Draft length: optimal policy vs fixed γ vs Leviathan's rule",
                     caption=("The optimal per-round window (exact MDP) is never below the best "
                              "fixed γ, and Leviathan's rule (γ from the mean acceptance α) tracks "
                              "the best fixed γ closely; the orange labels give the best fixed γ "
                              "at each cost, shrinking as drafting gets dearer."))
