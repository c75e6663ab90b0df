r"""Speculative decoding with one draft per round: Fig. 2(a), the law of N_rej, walltime.

With one draft token per position, position n rejects with probability TV(pₙ, qₙ) given its
context, so the expected number of rejections of a length-T generation is Theorem 1's
E[N_rej] = Σₙ E[TV(pₙ(·|s), qₙ(·|s))] under the target's context law.  Three experiments:

* ``fig2a`` — the running mean of N_rej on the paper's Fig. 2 chains against Theorem 1 (and
  the 16.41 the paper prints);
* ``pmf`` — the exact law of N_rej for ``Speculative(window=4)`` (the DP) against a histogram
  of simulated runs (a chi-square goodness-of-fit check);
* ``walltime`` — the expected number of target calls vs the window γ (exact DP and
  simulation) beside Leviathan et al.'s i.i.d. formula T (1 − α) / (1 − α^{γ+1}) with
  α = 1 − E[N_rej]/T, and the speedup T / E[time] for draft costs c = 0.05, 0.2.
"""

from __future__ import annotations

import numpy as np

from sim.engine import simulate
from sim.experiments.common import Experiment, Outcome, fit_row, mean_row, running_rejections
from sim.experiments.plotting import COLORS, LEGEND_SIZE, label_axes, new_figure, running_means
from sim.models import FIG2_PRINTED_THEOREM1, fig2_pair
from sim.stats import DEFAULT_ALPHA, pmf_check, pmf_moments
from theory import (
    Speculative,
    expected_speedup,
    expected_target_calls,
    rejection_pmf,
    target_calls_pmf,
    theorem1_rejections,
)
from theory.symbolic import leviathan_walltime_factor

__all__ = ["FIG2A", "PMF", "WALLTIME", "fig2a", "pmf_bars", "pmf_experiment", "walltime",
           "walltime_panels"]


# Fig. 2 runs on fig2_pair's "paper" instance (a reconstruction of the paper's chains whose
# Theorem 1 value matches the printed 16.41); batch.fig2_dirichlet repeats Fig. 2(a, b) on the
# Dirichlet(1) stand-in the package used before.
def fig2a(settings, rng) -> Outcome:
    draft, target = fig2_pair(50, instance="paper")
    row, series = running_rejections(draft, target, Speculative(), "SD (Theorem 1)",
                                     theorem1_rejections(draft, target), settings, rng,
                                     printed=FIG2_PRINTED_THEOREM1)
    return Outcome([row], {"series": [series]})


def pmf_experiment(settings, rng) -> Outcome:
    draft, target = fig2_pair(50, instance="paper")
    algorithm = Speculative(window=4)
    pmf = rejection_pmf(draft, target, algorithm)
    samples = simulate(draft, target, algorithm, n_trials=settings.trials, rng=rng,
                       client=settings.client).rejections
    check = pmf_check(samples, pmf, alpha=DEFAULT_ALPHA)
    counts = np.bincount(samples, minlength=pmf.size)
    return Outcome([fit_row("law of N_rej, Speculative(window=4)", check)],
                   {"pmf": pmf.tolist(), "counts": counts.tolist()})


def pmf_bars(data, title):
    figure, ax = new_figure()
    k = np.arange(len(data["pmf"]))
    counts = np.asarray(data["counts"], dtype=float)
    n = counts.sum()
    ax.bar(k, counts / n, color=COLORS[0], alpha=0.5, label=f"simulated ({int(n):,} runs)")
    ax.plot(k, data["pmf"], "k.-", lw=1, label="exact pmf (DP)")
    mask = counts > 0
    ax.set_xlim(k[mask].min() - 2, k[mask].max() + 2)
    label_axes(ax, "number of rejections", "probability", title)
    return figure


def walltime(settings, rng) -> Outcome:
    draft, target = fig2_pair(50, instance="paper")
    horizon = target.horizon
    alpha = 1 - theorem1_rejections(draft, target) / horizon  # mean acceptance
    windows = list(range(1, 11))
    rows, data = [], {"window": windows, "calls_theory": [], "calls_simulated": [],
                      "calls_standard_error": [], "calls_leviathan": [], "speedup": {}}
    for window, stream in zip(windows, rng.spawn(len(windows)), strict=True):
        algorithm = Speculative(window=window)
        mean, variance = pmf_moments(target_calls_pmf(draft, target, algorithm))
        samples = simulate(draft, target, algorithm, n_trials=settings.trials // 4,
                           rng=stream, client=settings.client).target_calls
        row = mean_row(f"E[target calls] window={window}", samples, mean, variance)
        rows.append(row)
        data["calls_theory"].append(mean)
        data["calls_simulated"].append(row["estimate"])
        data["calls_standard_error"].append((row["ci_high"] - row["ci_low"]) / 3.92)
        per_round = (1 - alpha ** (window + 1)) / (1 - alpha)
        data["calls_leviathan"].append(horizon / per_round)
    for cost in (0.05, 0.2):
        data["speedup"][str(cost)] = {
            "exact": [expected_speedup(draft, target, Speculative(window=w), cost_ratio=cost)
                      for w in windows],
            "leviathan": [float(leviathan_walltime_factor(alpha, w, cost)) for w in windows]}
    data["expected_target_calls_sd"] = expected_target_calls(draft, target)
    return Outcome(rows, data)


def walltime_panels(data, title):
    figure, axes = new_figure(2)
    window = data["window"]
    axes[0].plot(window, data["calls_theory"], "k-", label="exact DP")
    axes[0].errorbar(window, data["calls_simulated"],
                     yerr=[1.96 * e for e in data["calls_standard_error"]], fmt="o", ms=4,
                     color=COLORS[0], capsize=3, label="simulated ± 95%")
    axes[0].plot(window, data["calls_leviathan"], ":", color=COLORS[1],
                 label="Leviathan i.i.d. formula, α = 1 − mean TV")
    label_axes(axes[0], "window γ", "expected target calls")
    for i, (cost, speedups) in enumerate(data["speedup"].items()):
        axes[1].plot(window, speedups["exact"], "-", color=COLORS[i],
                     label=f"c = {cost}: exact (context-dependent)")
        axes[1].plot(window, speedups["leviathan"], ":", color=COLORS[i],
                     label=f"c = {cost}: Leviathan i.i.d.")
    label_axes(axes[1], "window γ", "speedup T / E[time] (time in target calls)")
    axes[1].set_title("c = cost of one draft token / cost of one target call",
                      fontsize=LEGEND_SIZE + 1)
    figure.suptitle(title)
    return figure


FIG2A = Experiment("fig2a", fig2a, running_means,
                   "Fig. 2(a): speculative decoding vs Theorem 1 (paper's instance, T = 50)",
                   caption=("The running mean of N_rej settles inside its 95% band onto the dashed "
                            "Theorem 1 line (Σₙ E_q[TV(pₙ, qₙ)]), whose value is printed beside "
                            "the paper's."))
PMF = Experiment("pmf", pmf_experiment, pmf_bars,
                 "Exact law of N_rej vs simulation (Fig. 2 chains, window 4)",
                 caption=("The simulated histogram of N_rej matches the exact law of the dynamic "
                          "program bar by bar, not only in its mean (the chi-square check is in "
                          "the table below)."))
WALLTIME = Experiment("walltime", walltime, walltime_panels,
                      "Target calls and walltime vs window γ (Fig. 2 chains)",
                      caption=("Left: expected target calls fall with γ and the simulated points "
                               "sit on the exact DP; Leviathan's i.i.d. formula (dotted) is close "
                               "but not exact on context-dependent chains. Right: the speedup "
                               "peaks at a finite window, which shrinks as the draft cost c "
                               "grows."))
