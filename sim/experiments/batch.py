r"""Batch speculative decoding (M i.i.d. drafts per round): Fig. 2(b, c), Fig. 3, Fig. 5, the gap.

With M drafts, the root of a round is rejected only when every draft is: Theorem 3 gives
E[N_rej] = Σₙ E[Π_{m≤M} TV(q^m_n, pₙ)] for the paper's Algorithm 4 ("paper"), where q^m is
the residual law after m rejections; the trie verifier rejects less.  Proposition 1 gives
the M → ∞ limits, and α*(p, q, M) = 1 + min_H [q(H) − p(H)^M] the root acceptance of the
optimal multi-draft verifier.  The experiments:

* :func:`batch_experiment` — E[N_rej] vs M for both verifiers: exact DP, simulation, z test,
  the limits and :func:`multidraft_gap` (what the recursive verifiers leave to α*);
* ``fig2b`` — running means of N_rej for M = 4, 5 against Theorem 3 (paper's instance);
* ``fig2c`` — E[N_rej] vs M (:func:`batch_experiment` on the paper's instance, T = 50);
* ``fig2_dirichlet`` — Fig. 2(a, b) on the Dirichlet(1) stand-in instance;
* ``fig5`` — the appendix's T = 100 setting: running means for M = 1, 2, 4, 5 and E[N_rej]
  vs M;
* ``fig3`` — the batch improvement BI = TV(p, q) − P(one position rejects) vs M on the
  paper's Bernoulli and uniform-subset examples, closed form and simulated;
* ``gap`` — root acceptance of the recursive verifiers against α* vs M.

Fig. 2(a)'s and Fig. 5's single-draft running mean is M = 1 of the same picture, which is why
``fig2_dirichlet`` and ``fig5`` live here beside the batch panels they share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.engine import simulate
from sim.experiments.common import Experiment, Outcome, mean_row, running_rejections
from sim.experiments.plotting import (
    COLORS,
    LEGEND_SIZE,
    label_axes,
    new_figure,
    running_axes,
    running_means,
)
from sim.models import bernoulli_pair, fig2_pair, uniform_subset_pair
from sim.stats import DEFAULT_ALPHA, mean_check, pmf_moments
from theory import (
    BatchSpeculative,
    MarkovLM,
    Speculative,
    batch_rejection_limit,
    optimal_multidraft_acceptance,
    rejection_pmf,
    root_acceptance,
    theorem1_rejections,
    theorem3_rejections,
    tv_distance,
)

__all__ = ["FIG2B", "FIG2C", "FIG2_DIRICHLET", "FIG3", "FIG5", "GAP", "BatchExperiment",
           "batch_experiment", "multidraft_gap"]


def multidraft_gap(draft: MarkovLM, target: MarkovLM, n_drafts: int) -> float:
    r"""Average over positions of α*(pₙ, qₙ, M) − (1 − Π_m TV(q^m_n, pₙ)) under the target.

    How much root acceptance the recursive ("paper"/"trie") verifier leaves on the table
    compared with the optimal multi-draft verifier, per position, averaged over n and over
    the target's context law.
    """
    marginals = np.asarray(target.context_marginals(), dtype=np.float64)
    p = np.asarray(draft.probs, dtype=np.float64)
    q = np.asarray(target.probs, dtype=np.float64)
    gap = optimal_multidraft_acceptance(p, q, n_drafts) - root_acceptance(p, q, n_drafts)
    return float((marginals * gap).sum() / target.horizon)


@dataclass(frozen=True)
class BatchExperiment:
    """Simulated vs exact E[N_rej] for ``BatchSpeculative(M, verifier)``, with limits and gaps."""

    rows: list = field(default_factory=list)
    limits: dict = field(default_factory=dict)
    gaps: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(row["passed"] for row in self.rows)


def batch_experiment(draft: MarkovLM, target: MarkovLM, n_drafts=range(1, 9), *,
                     verifiers=("paper", "trie"), n_trials: int = 100_000, rng=None,
                     alpha: float = DEFAULT_ALPHA, client=None) -> BatchExperiment:
    """E[N_rej] vs M for both verifiers: exact DP, simulation ± standard error, z, p, verdict.

    Also Proposition 1's M → ∞ limits and the gap to the optimal multi-draft verifier.
    ``client`` runs the simulations on a dask cluster (same results).

    Examples
    --------
    >>> from sim.experiments import batch_experiment
    >>> from sim.models import fig2_pair
    >>> result = batch_experiment(*fig2_pair(), n_drafts=[1, 2], n_trials=2000, rng=0)
    >>> [(row["n_drafts"], row["verifier"]) for row in result.rows]
    [(1, 'paper'), (1, 'trie'), (2, 'paper'), (2, 'trie')]
    """
    n_drafts = list(n_drafts)
    streams = np.random.default_rng(rng).spawn(len(n_drafts) * len(verifiers))
    rows = []
    for i, (m, verifier) in enumerate((m, v) for m in n_drafts for v in verifiers):
        algorithm = BatchSpeculative(m, verifier)
        mean, variance = pmf_moments(rejection_pmf(draft, target, algorithm))
        result = simulate(draft, target, algorithm, n_trials=n_trials, rng=streams[i],
                          client=client)
        check = mean_check(result.rejections, mean, variance=variance, alpha=alpha,
                           name=f"E[N_rej] M={m} {verifier}")
        rows.append({"n_drafts": m, "verifier": verifier, "theory": mean,
                     "simulated": check.estimate, "standard_error": check.standard_error,
                     "z": check.statistic, "p_value": check.p_value, "passed": check.passed})
    limits = {v: float(batch_rejection_limit(draft, target, v)) for v in verifiers}
    gaps = {m: multidraft_gap(draft, target, m) for m in n_drafts}
    return BatchExperiment(rows, limits, gaps)


# Fig. 2 and Fig. 5 run on fig2_pair's "paper" instance (a reconstruction of the paper's
# chains whose Theorem 1 value matches the printed 16.41); fig2_dirichlet repeats Fig. 2(a, b)
# on the Dirichlet(1) stand-in the package used before.
def _batch_running(draft, target, drafts, settings, rng):
    rows, series = [], []
    for m, stream in zip(drafts, rng.spawn(len(drafts)), strict=True):
        row, s = running_rejections(draft, target, BatchSpeculative(m),
                                    f"batch M={m} (Theorem 3)",
                                    theorem3_rejections(draft, target, m), settings, stream)
        rows.append(row)
        series.append(s)
    return rows, series


def fig2b(settings, rng) -> Outcome:
    rows, series = _batch_running(*fig2_pair(50, instance="paper"), (4, 5), settings, rng)
    return Outcome(rows, {"series": series})


def _drafts(horizon, settings, rng):
    draft, target = fig2_pair(horizon, instance="paper")
    result = batch_experiment(draft, target, range(1, settings.max_drafts + 1),
                              n_trials=settings.trials // 2, rng=rng,
                              client=settings.client)
    rows = [{"quantity": f"E[N_rej] T={horizon} M={r['n_drafts']} {r['verifier']}",
             "closed_form": r["theory"], "estimate": r["simulated"],
             "ci_low": r["simulated"] - 1.96 * r["standard_error"],
             "ci_high": r["simulated"] + 1.96 * r["standard_error"], "z": r["z"],
             "p_value": r["p_value"], "passed": r["passed"]} for r in result.rows]
    return rows, {"rows": result.rows, "limits": result.limits,
                  "gaps": {str(k): v for k, v in result.gaps.items()}}


def fig2c(settings, rng) -> Outcome:
    rows, data = _drafts(50, settings, rng)
    return Outcome(rows, data)


def fig2_dirichlet(settings, rng) -> Outcome:
    first, second = rng.spawn(2)
    draft, target = fig2_pair(50, instance="dirichlet")
    row, series = running_rejections(draft, target, Speculative(), "SD (Theorem 1)",
                                     theorem1_rejections(draft, target), settings, first)
    batch_rows, batch_series = _batch_running(draft, target, (4, 5), settings, second)
    return Outcome([row, *batch_rows], {"series": [series, *batch_series]})


def fig5(settings, rng) -> Outcome:
    """The appendix's T = 100 setting; its middle panel is batch SD with M = 2 (Appendix F),
    shown with Fig. 2(b)'s M = 4 and 5 as well."""
    first, second, third = rng.spawn(3)
    draft, target = fig2_pair(100, instance="paper")
    row, series = running_rejections(draft, target, Speculative(), "SD (Theorem 1)",
                                     theorem1_rejections(draft, target), settings, first)
    batch_rows, batch_series = _batch_running(draft, target, (2, 4, 5), settings, second)
    draft_rows, drafts = _drafts(100, settings, third)
    return Outcome([row, *batch_rows, *draft_rows],
                   {"running": {"series": [series, *batch_series]}, "drafts": drafts})


def fig3(settings, rng) -> Outcome:
    rows = []
    data = {"bernoulli": [], "uniform": []}
    m_theory = list(range(1, 11))
    m_sim = [1, 2, 4, 8]
    families = [("bernoulli", u, bernoulli_pair(u, 0.5)) for u in (0.6, 0.7, 0.8, 0.9)] + \
        [("uniform", r, uniform_subset_pair(4 * r, 4)) for r in (2, 3, 4)]
    streams = iter(rng.spawn(len(families) * len(m_sim)))
    for family, parameter, (draft, target) in families:
        p, q = draft.probs[0, 0], target.probs[0, 0]
        distance = float(tv_distance(p, q))
        theory = [distance - (1 - float(root_acceptance(p, q, m))) for m in m_theory]
        simulated, errors = [], []
        for m in m_sim:
            fail = 1 - float(root_acceptance(p, q, m))  # P(one position rejects) = Π r_m
            samples = simulate(draft, target, BatchSpeculative(m), n_trials=settings.trials,
                               rng=next(streams), client=settings.client).rejections
            row = mean_row(f"P(reject) {family} {'u' if family == 'bernoulli' else 'r'}="
                           f"{parameter} M={m}", samples, fail, fail * (1 - fail))
            rows.append(row)
            simulated.append(distance - row["estimate"])
            errors.append((fail * (1 - fail) / settings.trials) ** 0.5)
        data[family].append({"parameter": parameter, "m": m_theory, "theory": theory,
                             "m_sim": m_sim, "simulated": simulated,
                             "standard_error": errors})
    return Outcome(rows, data)


def gap(settings, rng) -> Outcome:
    draft, target = fig2_pair(50, instance="paper")
    marginals = target.context_marginals()
    m_values = list(range(1, 11))
    p, q = np.asarray(draft.probs), np.asarray(target.probs)
    weights = marginals / target.horizon
    series = {"Fig. 2 (position average)": {
        "m": m_values,
        "optimal": [float((weights * optimal_multidraft_acceptance(p, q, m)).sum())
                    for m in m_values],
        "recursive": [float((weights * root_acceptance(p, q, m)).sum()) for m in m_values]}}
    bp, bq = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    series["p = Ber(1/2), q = Ber(1/10)"] = {
        "m": m_values,
        "optimal": [float(optimal_multidraft_acceptance(bp, bq, m)) for m in m_values],
        "recursive": [float(root_acceptance(bp, bq, m)) for m in m_values]}
    return Outcome([], {"series": series})


def _draft_curves(ax, data):
    """E[N_rej] vs M for both verifiers; the M → ∞ limits (far below the curves: the trie's is
    0 when the draft has full support) go in an inset, so the main axes keep the error bars
    readable."""
    inset = ax.inset_axes([0.5, 0.5, 0.47, 0.45])
    for i, verifier in enumerate(("paper", "trie")):
        rows = [row for row in data["rows"] if row["verifier"] == verifier]
        m = [row["n_drafts"] for row in rows]
        theory = [row["theory"] for row in rows]
        color, marker = COLORS[i], "os"[i]
        ax.plot(m, theory, "-", color=color, label=f"{verifier}: theory (exact DP)")
        ax.errorbar(m, [row["simulated"] for row in rows],
                    yerr=[1.96 * row["standard_error"] for row in rows], fmt=marker, ms=4,
                    color=color, capsize=3, label=f"{verifier}: simulated ± 95% CI")
        inset.plot(m, theory, "-", color=color)
        limit = data["limits"][verifier]
        inset.axhline(limit, color=color, ls=":", label=f"{verifier}: M → ∞ limit {limit:.3g}")
    inset.set_ylim(bottom=min(0, *data["limits"].values()) - 1)
    inset.set_title("with the M → ∞ limits", fontsize=LEGEND_SIZE)
    inset.tick_params(labelsize=7)
    inset.legend(fontsize=7, loc="center right")
    inset.xaxis.get_major_locator().set_params(integer=True)
    label_axes(ax, "number of drafts M (M = 1 is speculative decoding)",
               "E[number of rejections]", loc="lower left")


def rejections_vs_drafts(data, title):
    figure, ax = new_figure(height=4.6)
    _draft_curves(ax, data)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title)
    return figure


def running_panels(data, title):
    figure, axes = new_figure(2)
    running_axes(axes[0], data["series"][:1], "(a) speculative decoding")
    running_axes(axes[1], data["series"][1:], "(b) batch speculative")
    figure.suptitle(title)
    return figure


def fig5_panels(data, title):
    figure, axes = new_figure(3, width=18, height=5)
    series = data["running"]["series"]
    running_axes(axes[0], series[:1], "(a) speculative decoding")
    running_axes(axes[1], series[1:], "(b) batch speculative, M = 2 (paper), 4, 5")
    _draft_curves(axes[2], data["drafts"])
    axes[2].xaxis.get_major_locator().set_params(integer=True)
    axes[2].set_title("(c) rejections vs M")
    figure.suptitle(title)
    return figure


def batch_improvement(data, title):
    figure, axes = new_figure(2)
    for ax, family, label in ((axes[0], "bernoulli", "u"), (axes[1], "uniform", "r")):
        for i, curve in enumerate(data[family]):
            color = COLORS[i % len(COLORS)]
            ax.plot(curve["m"], curve["theory"], "-", color=color,
                    label=f"{label} = {curve['parameter']}: closed form")
            ax.errorbar(curve["m_sim"], curve["simulated"],
                        yerr=[1.96 * e for e in curve["standard_error"]], fmt="o", ms=4,
                        color=color, capsize=3)
        label_axes(ax, "number of drafts M", "batch improvement BI")
    axes[0].set_title("(a) p = Ber(u), q = Ber(1/2)")
    axes[1].set_title("(b) p uniform on V = 4r tokens, q uniform on 4 of them")
    for ax in axes:
        ax.text(0.98, 0.02, "dots: simulated ± 95% CI", transform=ax.transAxes, ha="right",
                fontsize=LEGEND_SIZE)
    figure.suptitle(title)
    return figure


def gap_curves(data, title):
    figure, ax = new_figure()
    for i, (name, series) in enumerate(data["series"].items()):
        ax.plot(series["m"], series["optimal"], "-", color=COLORS[i],
                label=f"{name}: optimal α*")
        ax.plot(series["m"], series["recursive"], "--", color=COLORS[i],
                label=f"{name}: paper/trie root acceptance")
    label_axes(ax, "number of drafts M", "root acceptance probability", title)
    return figure


FIG2B = Experiment("fig2b", fig2b, running_means,
                   "Fig. 2(b): batch speculative decoding vs Theorem 3 (paper's instance)",
                   caption=("Each batch running mean (M = 4, 5) settles onto its own dashed "
                            "Theorem 3 line, below the single-draft value of Fig. 2(a): more "
                            "drafts, fewer rejections."))
FIG2C = Experiment("fig2c", fig2c, rejections_vs_drafts,
                   "Fig. 2(c): rejections vs number of drafts (paper's instance)",
                   caption=("Rejections fall with M for both verifiers, the trie verifier below "
                            "the paper's for M > 1; simulated dots (95% CI) sit on the exact "
                            "curves. The inset adds the M → ∞ limits: above zero for the paper's "
                            "verifier (Proposition 1), zero for the trie."))
FIG2_DIRICHLET = Experiment("fig2_dirichlet", fig2_dirichlet, running_panels,
                            "Fig. 2(a, b) on the Dirichlet(1) stand-in instance (T = 50)",
                            caption=("The convergence of Fig. 2(a, b) on a second instance "
                                     "(Dirichlet(1) rows): each running mean settles onto its "
                                     "theorem line, the batch lines below the single-draft one."))
FIG5 = Experiment("fig5", fig5, fig5_panels, "Fig. 5: the T = 100 setting (paper's instance)",
                  caption=("Fig. 2 at T = 100: the running means settle onto their theorem lines, "
                           "and rejections vs M keep the trie verifier below the paper's."))
FIG3 = Experiment("fig3", fig3, batch_improvement, "Fig. 3: batch improvement vs M",
                  caption=("Simulated dots sit on the closed-form batch improvement curves, which "
                           "grow with M and level off: (a) the Bernoulli closed form, (b) the "
                           "uniform-on-a-subset one, whose ceiling is 1 − 1/r."))
GAP = Experiment("gap", gap, gap_curves,
                 "Root acceptance: recursive verifiers vs the optimal one",
                 caption=("The recursive (paper/trie) root acceptance (dashed) stays below the "
                          "optimal α* (solid) for M > 1; on the Bernoulli example the optimal "
                          "verifier reaches acceptance 1 with fewer drafts."))
