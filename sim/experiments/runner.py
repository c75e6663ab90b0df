"""``specdec reproduce``: every figure of the paper and ours, and a theory-vs-simulation report.

Each experiment simulates, checks every simulated statistic against its closed form with
:mod:`sim.stats` (level :data:`sim.stats.DEFAULT_ALPHA` per check, fixed seeds, no retries),
and returns check rows plus the data of its figure.  :func:`reproduce` runs them all, writes

* ``figures/<name>.png`` and ``.pdf``,
* ``data/<name>.json`` — every number, including every plotted series (running means
  thinned to log-spaced points), with the seed, the configuration, package versions and the
  git commit (written atomically),
* ``report.md`` — a summary (checks per experiment, which were reused by a resumed run), the
  figures, then one table row per check (quantity, closed form, simulated estimate with its
  95% interval, z or χ², p, verdict),

and returns the number of failed checks (the command's exit status is non-zero if any fail).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from sim import figures
from sim.engine import simulate
from sim.experiments import batch_experiment, equal_rejection_eps, tradeoff_table
from sim.models import (
    FIG2_PRINTED_THEOREM1,
    bernoulli_pair,
    context_free_pair,
    fig2_pair,
    ngram_pair,
    temperature_pair,
    uniform_subset_pair,
)
from sim.multidraft_experiment import multidraft
from sim.stats import DEFAULT_ALPHA, counts_check, mean_check, pmf_check, pmf_moments
from theory import (
    BatchSpeculative,
    BlockSpeculative,
    LossySpeculative,
    Speculative,
    TruncatedSpeculative,
    TypicalAcceptance,
    expected_rejections,
    expected_speedup,
    expected_target_calls,
    expected_walltime,
    optimal_multidraft_acceptance,
    optimal_window_policy,
    rejection_pmf,
    target_calls_pmf,
    theorem1_rejections,
    theorem3_rejections,
    tv_distance,
)
from theory.batch import root_acceptance
from theory.exact import walltime_components
from theory.lossy import chain_tradeoff, over_acceptance, rejection_probability, tv_loss
from theory.symbolic import leviathan_walltime_factor

__all__ = ["EXPERIMENTS", "Settings", "reproduce"]

#: Version of the experiments' definitions, stored in every data file: a resumed run recomputes
#: the files an older version wrote (version 2: Fig. 2 and Fig. 5 on the paper's instance;
#: version 3: running means stored as thinned series, chi-square statistics, the git commit).
RECORD_FORMAT = 3


@dataclass(frozen=True)
class Settings:
    """Sizes of a run: the default takes a few minutes on 2 cores, ``quick`` under one."""

    trials: int = 200_000
    max_drafts: int = 8
    quick: bool = False
    client: object = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, quick: bool, client=None) -> Settings:
        if quick:
            return cls(trials=20_000, max_drafts=5, quick=True, client=client)
        return cls(client=client)

    def describe(self) -> dict:
        """The settings as JSON-ready values (the cluster appears as its address, if any)."""
        address = getattr(getattr(self.client, "scheduler", None), "address", None)
        return {"trials": self.trials, "max_drafts": self.max_drafts, "quick": self.quick,
                "dask_scheduler": address}


@dataclass
class Outcome:
    rows: list = field(default_factory=list)
    data: dict = field(default_factory=dict)


def _mean_row(quantity: str, samples, mean: float, variance: float | None) -> dict:
    check = mean_check(samples, mean, variance=variance, alpha=DEFAULT_ALPHA, name=quantity)
    low, high = check.confidence_interval()
    return {"quantity": quantity, "closed_form": mean, "estimate": check.estimate,
            "ci_low": low, "ci_high": high, "z": check.statistic, "p_value": check.p_value,
            "passed": check.passed}


def _fit_row(quantity: str, check) -> dict:
    return {"quantity": quantity, "closed_form": None, "estimate": None, "ci_low": None,
            "ci_high": None, "z": check.statistic, "p_value": check.p_value,
            "passed": check.passed, "note": f"chi-square, {check.degrees_of_freedom} dof"}


#: Points of a plotted running mean (log-spaced over the runs; the last run always included).
RUNNING_POINTS = 300


def running_mean_series(samples, sd: float, n_points: int = RUNNING_POINTS) -> dict:
    r"""The running mean of ``samples`` and its 95% band, at ~``n_points`` log-spaced runs.

    Parameters
    ----------
    samples : array_like
        One number per run, in run order.
    sd : float >= 0
        The exact standard deviation σ of one sample.
    n_points : int >= 2
        How many runs k to keep (log-spaced from 1 to n, rounded, duplicates dropped).

    Returns
    -------
    dict
        ``runs`` (k), ``running_mean`` (x̄ₖ) and ``band_half_width`` (1.96 σ/√k): what the
        figures plot and the JSON stores.

    Notes
    -----
    The band is the 95% confidence interval of the running mean x̄ₖ around the exact mean
    under the central limit theorem, x̄ₖ ± 1.96 σ/√k — not a band of single runs.  A log
    axis shows k = 1 … n evenly, so log-spaced points lose nothing visible while keeping a
    figure (and its PDF) small however many runs were simulated.

    Examples
    --------
    >>> from sim.reproduce import running_mean_series
    >>> series = running_mean_series([1, 3, 2, 2], sd=1.0, n_points=3)
    >>> series["runs"], series["running_mean"]
    ([1, 2, 4], [1.0, 2.0, 2.0])
    """
    samples = np.asarray(samples, dtype=np.float64)
    means = np.cumsum(samples) / np.arange(1, samples.size + 1)
    runs = np.unique(np.rint(np.geomspace(1, samples.size, n_points)).astype(np.int64))
    return {"runs": runs.tolist(), "running_mean": means[runs - 1].tolist(),
            "band_half_width": (1.96 * sd / np.sqrt(runs)).tolist()}


def _running(draft, target, algorithm, label, theory, settings, rng, printed=None):
    """Simulated N_rej against ``theory``; ``printed`` is the value the paper prints, if any."""
    pmf = rejection_pmf(draft, target, algorithm)
    mean, variance = pmf_moments(pmf)
    samples = simulate(draft, target, algorithm, n_trials=settings.trials, rng=rng,
                       client=settings.client).rejections
    row = _mean_row(f"E[N_rej] {label}", samples, theory, variance)
    row["dp"] = mean
    drafts = algorithm.n_drafts if isinstance(algorithm, BatchSpeculative) else 1
    series = {"label": label, "n_drafts": drafts, "sd": variance ** 0.5, "theory": theory,
              **running_mean_series(samples, variance ** 0.5)}
    if printed is not None:
        row["printed"] = series["printed"] = printed
    return row, series


# ---------------------------------------------------------------------- experiments
# Fig. 2 and Fig. 5 run on fig2_pair's "paper" instance (a reconstruction of the paper's
# chains whose Theorem 1 value matches the printed 16.41); fig2_dirichlet repeats Fig. 2(a, b)
# on the Dirichlet(1) stand-in the package used before.
def fig2a(settings, rng) -> Outcome:
    draft, target = fig2_pair(50, instance="paper")
    row, series = _running(draft, target, Speculative(), "SD (Theorem 1)",
                           theorem1_rejections(draft, target), settings, rng,
                           printed=FIG2_PRINTED_THEOREM1)
    return Outcome([row], {"series": [series]})


def _batch_running(draft, target, drafts, settings, rng):
    rows, series = [], []
    for m, stream in zip(drafts, rng.spawn(len(drafts)), strict=True):
        row, s = _running(draft, target, BatchSpeculative(m), f"batch M={m} (Theorem 3)",
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
    row, series = _running(draft, target, Speculative(), "SD (Theorem 1)",
                           theorem1_rejections(draft, target), settings, first)
    batch_rows, batch_series = _batch_running(draft, target, (4, 5), settings, second)
    return Outcome([row, *batch_rows], {"series": [series, *batch_series]})


def fig5(settings, rng) -> Outcome:
    """The appendix's T = 100 setting; its middle panel is batch SD with M = 2 (Appendix F),
    shown with Fig. 2(b)'s M = 4 and 5 as well."""
    first, second, third = rng.spawn(3)
    draft, target = fig2_pair(100, instance="paper")
    row, series = _running(draft, target, Speculative(), "SD (Theorem 1)",
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
            row = _mean_row(f"P(reject) {family} {'u' if family == 'bernoulli' else 'r'}="
                            f"{parameter} M={m}", samples, fail, fail * (1 - fail))
            rows.append(row)
            simulated.append(distance - row["estimate"])
            errors.append((fail * (1 - fail) / settings.trials) ** 0.5)
        data[family].append({"parameter": parameter, "m": m_theory, "theory": theory,
                             "m_sim": m_sim, "simulated": simulated,
                             "standard_error": errors})
    return Outcome(rows, data)


def fig4a(settings, rng) -> Outcome:
    laws = np.random.default_rng(4).dirichlet(np.full(10, 0.8), size=2)
    single_draft, single_target = context_free_pair(laws[0], laws[1])
    p, q = single_draft.probs[0, 0], single_target.probs[0, 0]
    rows, points = [], []
    eps_values = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2]
    streams = iter(rng.spawn(2 * len(eps_values)))
    for rule in ("opt", "target"):
        for eps in eps_values:
            algorithm = LossySpeculative(eps, rule)
            accept, law = algorithm.verification(p, q)
            rho = float(rejection_probability(p, accept))
            output = accept * p + rho * law
            result = simulate(single_draft, single_target, algorithm, n_trials=settings.trials,
                              rng=next(streams), record_tokens=True, client=settings.client)
            rows.append(_mean_row(f"P(reject) eps={eps} {rule}", result.rejections, rho,
                                  rho * (1 - rho)))
            counts = np.bincount(result.tokens[:, 0], minlength=10)
            rows.append(_fit_row(f"emitted law eps={eps} {rule}",
                                 counts_check(counts, output / output.sum())))
            points.append({"eps": eps, "rejection": rule, "rejection_probability": rho,
                           "loss": float(tv_distance(output, q)),
                           "loss_star": float(tv_loss(p, q, over_acceptance(p, q, eps))),
                           "simulated_rejection_probability": float(result.rejections.mean()),
                           "standard_error": (rho * (1 - rho) / settings.trials) ** 0.5,
                           "simulated_loss": float(tv_distance(counts / counts.sum(), q))})
    return Outcome(rows, {"tv": float(tv_distance(p, q)), "points": points})


def fig4bc(settings, rng) -> Outcome:
    # ε sweeps sized to each chain: with V = 20 tokens over-acceptance saturates sooner
    chains = [("Fig. 2 chains (V = 7, T = 50)", fig2_pair(50, instance="paper"),
               [0.0, 0.02, 0.05, 0.1, 0.15, 0.2]),
              ("temperature pair (V = 20, T = 30, τ_p = 1.5)",
               temperature_pair(20, 30, draft_temperature=1.5, rng=5),
               [0.0, 0.001, 0.002, 0.005, 0.01, 0.03])]
    rows, data = [], {"chains": []}
    for (name, (draft, target), eps_values), stream in zip(chains, rng.spawn(len(chains)),
                                                          strict=True):
        table = tradeoff_table(draft, target, eps_values, n_trials=settings.trials // 4,
                               rng=stream, client=settings.client)
        for r in table:
            label = f"{name.split(' (')[0]} eps={r['eps']} {r['rejection']}"
            rows.append({"quantity": f"P(reject)/position {label}",
                         "closed_form": r["rejection_probability"],
                         "estimate": r["simulated_rejection_probability"],
                         "ci_low": r["simulated_rejection_probability"] - 1.96 * r[
                             "standard_error"],
                         "ci_high": r["simulated_rejection_probability"] + 1.96 * r[
                             "standard_error"],
                         "z": r["z"], "p_value": r["p_value"],
                         "passed": r["rejections_passed"]})
            rows.append({"quantity": f"last-token law {label}", "closed_form": None,
                         "estimate": None, "ci_low": None, "ci_high": None,
                         "z": r["tokens_statistic"], "p_value": r["tokens_p_value"],
                         "passed": r["tokens_passed"],
                         "note": f"chi-square vs the output model, {r['tokens_dof']} dof"})
        data["chains"].append({"name": name, "rows": table})
    return Outcome(rows, data)


def pmf_experiment(settings, rng) -> Outcome:
    draft, target = fig2_pair(50, instance="paper")
    algorithm = Speculative(window=4)
    pmf = rejection_pmf(draft, target, algorithm)
    samples = simulate(draft, target, algorithm, n_trials=settings.trials, rng=rng,
                       client=settings.client).rejections
    check = pmf_check(samples, pmf, alpha=DEFAULT_ALPHA)
    counts = np.bincount(samples, minlength=pmf.size)
    return Outcome([_fit_row("law of N_rej, Speculative(window=4)", check)],
                   {"pmf": pmf.tolist(), "counts": counts.tolist()})


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
        row = _mean_row(f"E[target calls] window={window}", samples, mean, variance)
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
            rows.append(_mean_row(f"E[{label}] optimal windows c={cost}", samples, mean,
                                  variance))
    return Outcome(rows, data)


ZOO_EPS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
ZOO_TYPICAL = [(threshold, alpha) for threshold in (0.05, 0.09, 0.2) for alpha in (0.1, 0.3, 1.0)]
ZOO_TOP_P = (0.5, 0.8, 0.9, 0.95, 0.99)


def _zoo_point(draft, target, algorithm, **labels) -> dict:
    return {**labels, **chain_tradeoff(draft, target, algorithm),
            "rejections": float(expected_rejections(draft, target, algorithm))}


def lossy_zoo(settings, rng) -> Outcome:
    """Fig. 4(a) extended (issue #15): every scheme's per-position (P(reject), Loss_TV)
    averaged along its own output chain (:func:`theory.lossy.chain_tradeoff`), against
    Theorem 5's line; typical acceptance against Decoding-OPT at equal E[N_rej]."""
    chains = [("Fig. 2 chains (V = 7, T = 50)", fig2_pair(50, instance="paper"), (1, 2, 3, 5)),
              ("text n-gram pair (V = 40, T = 16)",
               ngram_pair(vocab_size=40, max_contexts=300, horizon=16), (1, 2, 5, 10, 20))]
    rows, data = [], {"chains": []}
    for (name, (draft, target), top_k), stream in zip(chains, rng.spawn(len(chains)),
                                                     strict=True):
        short = name.split(" (")[0]
        points = [_zoo_point(draft, target, LossySpeculative(eps, rule), scheme=rule, eps=eps)
                  for rule in ("opt", "target") for eps in ZOO_EPS]
        table = []
        for threshold, alpha in ZOO_TYPICAL:
            algorithm = TypicalAcceptance(threshold, alpha)
            point = _zoo_point(draft, target, algorithm, scheme="typical",
                               threshold=threshold, alpha=alpha)
            points.append(point)
            points.append(_zoo_point(draft, target, TypicalAcceptance(threshold, alpha, "opt"),
                                     scheme="typical_opt", threshold=threshold, alpha=alpha))
            eps = equal_rejection_eps(draft, target, point["rejections"])
            opt_kl = None if eps is None else chain_tradeoff(
                draft, target, LossySpeculative(eps))["sequence_kl"]
            table.append({"threshold": threshold, "alpha": alpha,
                          "rejections": point["rejections"], "gap": point["gap"],
                          "typical_kl": point["sequence_kl"], "opt_eps": eps, "opt_kl": opt_kl})
        points += [_zoo_point(draft, target, TruncatedSpeculative(top_k=k), scheme="top_k",
                              top_k=k) for k in top_k]
        points += [_zoo_point(draft, target, TruncatedSpeculative(top_p=top_p),
                              scheme="top_p", top_p=top_p) for top_p in ZOO_TOP_P]
        # simulation: typical acceptance at Medusa's defaults and one truncation, vs the DPs
        for algorithm, label, seed in zip((TypicalAcceptance(), TruncatedSpeculative(top_p=0.9)),
                                          ("typical (0.09, 0.3)", "top-p 0.9"),
                                          stream.spawn(2), strict=True):
            mean, variance = pmf_moments(rejection_pmf(draft, target, algorithm))
            samples = simulate(draft, target, algorithm, n_trials=settings.trials // 4,
                               rng=seed, client=settings.client).rejections
            rows.append(_mean_row(f"E[N_rej] {short} {label}", samples, mean, variance))
        data["chains"].append({"name": name, "points": points, "table": table})
    data["markdown"] = _zoo_markdown(data["chains"])
    return Outcome(rows, data)


def _zoo_markdown(chains) -> list[str]:
    """The issue's table: typical acceptance vs Decoding-OPT at equal expected rejections."""
    lines = ["Typical acceptance (rejection from q) against Decoding-OPT at equal E[N_rej]: "
             "gap = distance above Theorem 5's line per position (along the scheme's own "
             "output chain); KL = KL(output ‖ target) of whole sequences. '—': typical "
             "acceptance rejects more than lossless SD, so no ε matches.", ""]
    for chain in chains:
        lines += [f"**{chain['name']}**", "",
                  "| threshold | α | E[N_rej] | gap above line | KL typical | ε (OPT) | KL OPT |",
                  "|---|---|---|---|---|---|---|"]
        for row in chain["table"]:
            eps = "—" if row["opt_eps"] is None else f"{row['opt_eps']:.4f}"
            kl = "—" if row["opt_kl"] is None else f"{row['opt_kl']:.4f}"
            lines.append(f"| {row['threshold']} | {row['alpha']} | {row['rejections']:.3f} | "
                         f"{row['gap']:.4f} | {row['typical_kl']:.4f} | {eps} | {kl} |")
        lines.append("")
    return lines


#: Windows of the block-verification experiment: exact on Fig. 2 (the round law of γ = 5 is
#: 7 · 7⁵ draft-tree leaves per position, about 2 s; γ = 6 costs about 17 s), and the windows
#: simulated on the n-gram pair (V = 1000, S = 2000: S · V^γ leaves, no exact round law).
BLOCK_WINDOWS = (1, 2, 3, 4, 5)
BLOCK_NGRAM_WINDOWS = (2, 4)
BLOCK_COSTS = (0.05, 0.2)


def _simulated_only_row(quantity: str, samples) -> dict:
    """A row with an estimate and no closed form (nothing to check: ``passed`` is None)."""
    samples = np.asarray(samples, dtype=np.float64)
    mean, error = float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(samples.size))
    return {"quantity": quantity, "closed_form": None, "estimate": mean,
            "ci_low": mean - 1.96 * error, "ci_high": mean + 1.96 * error, "z": None,
            "p_value": None, "passed": None,
            "note": "simulated only (exact round law too large)"}


def block_verification(settings, rng) -> Outcome:
    """Token-wise vs block verification (Sun et al., ICLR 2025): tokens per target call and
    walltime speedup vs γ, exact and simulated on Fig. 2, simulated on the n-gram pair."""
    # quick: the exact windows up to 3 and one simulated n-gram window
    exact_windows, ngram_windows = ((1, 2, 3), (2,)) if settings.quick else \
        (BLOCK_WINDOWS, BLOCK_NGRAM_WINDOWS)
    rows, data = [], {"fig2": {}, "ngram": {}, "costs": list(BLOCK_COSTS)}
    draft, target = fig2_pair(50, instance="paper")
    horizon = target.horizon
    kinds = {"token-wise": lambda w: Speculative(window=w), "block": BlockSpeculative}
    streams = iter(rng.spawn(2 * (len(exact_windows) + len(ngram_windows))))
    for kind, make in kinds.items():
        entry = data["fig2"][kind] = {"window": list(exact_windows), "calls_exact": [],
                                      "calls_simulated": [], "calls_standard_error": [],
                                      "speedup": {str(c): [] for c in BLOCK_COSTS}}
        for window in exact_windows:
            algorithm = make(window)
            mean, variance = pmf_moments(target_calls_pmf(draft, target, algorithm))
            samples = simulate(draft, target, algorithm, n_trials=settings.trials // 10,
                               rng=next(streams), client=settings.client).target_calls
            row = _mean_row(f"E[target calls] Fig. 2, {kind}, γ={window}", samples, mean,
                            variance)
            rows.append(row)
            entry["calls_exact"].append(mean)
            entry["calls_simulated"].append(row["estimate"])
            entry["calls_standard_error"].append((row["ci_high"] - row["ci_low"]) / 3.92)
            for cost in BLOCK_COSTS:
                entry["speedup"][str(cost)].append(
                    float(expected_speedup(draft, target, algorithm, cost_ratio=cost)))
        entry["tokens_per_call_exact"] = [horizon / c for c in entry["calls_exact"]]
    token, block = data["fig2"]["token-wise"], data["fig2"]["block"]
    data["fig2"]["gain_tokens_per_call"] = [b / t - 1 for t, b in zip(
        token["tokens_per_call_exact"], block["tokens_per_call_exact"], strict=True)]

    draft, target = ngram_pair()
    horizon = target.horizon
    for kind, make in kinds.items():
        entry = data["ngram"][kind] = {"window": list(ngram_windows),
                                       "calls_simulated": [], "calls_standard_error": [],
                                       "speedup_approx": {str(c): [] for c in BLOCK_COSTS}}
        for window in ngram_windows:
            samples = simulate(draft, target, make(window), n_trials=settings.trials // 40,
                               rng=next(streams), client=settings.client).target_calls
            row = _simulated_only_row(f"E[target calls] n-gram, {kind}, γ={window}", samples)
            rows.append(row)
            entry["calls_simulated"].append(row["estimate"])
            entry["calls_standard_error"].append((row["ci_high"] - row["ci_low"]) / 3.92)
            for cost in BLOCK_COSTS:  # every round charged γ drafts: a slight underestimate
                entry["speedup_approx"][str(cost)].append(
                    horizon / (row["estimate"] * (1 + cost * window)))
        entry["tokens_per_call_simulated"] = [horizon / c for c in entry["calls_simulated"]]
    data["ngram"]["horizon"] = horizon
    return Outcome(rows, data)


EXPERIMENTS = {"fig2a": fig2a, "fig2b": fig2b, "fig2c": fig2c,
               "fig2_dirichlet": fig2_dirichlet, "fig5": fig5, "fig3": fig3,
               "fig4a": fig4a, "fig4bc": fig4bc, "pmf": pmf_experiment,
               "walltime": walltime, "gap": gap, "windows": windows,
               "lossy_zoo": lossy_zoo, "block": block_verification,
               "multidraft": multidraft}


# ---------------------------------------------------------------------- the run
def versions() -> dict:
    import matplotlib
    import scipy
    import sympy

    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "sympy": sympy.__version__,
            "matplotlib": matplotlib.__version__}


def git_commit() -> dict:
    """The commit of the package's checkout, and whether it has uncommitted changes.

    ``{"commit": None, "dirty": None}`` outside a git checkout (e.g. an installed copy) or
    without git.
    """
    import subprocess

    here = pathlib.Path(__file__).resolve().parent

    def git(*arguments):
        return subprocess.run(["git", *arguments], cwd=here, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def write_json_atomically(path: pathlib.Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=1, default=float))
    os.replace(temporary, path)


def _number(value, digits: int = 6) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and (abs(value) >= 1e4 or (0 < abs(value) < 1e-3)):
        return f"{value:.3e}"
    return f"{value:.{digits}g}"


INSTANCES = (
    "Fig. 2 and Fig. 5 (and the pmf, walltime, gap and Fig. 4(b) chain experiments) use "
    "`fig2_pair(instance=\"paper\")`, a reconstruction of the paper's chains (legacy "
    "`np.random.RandomState(10)`, draft then target drawn as `rand(T, 7, 7)` with every row "
    "divided by its sum, uniform prompt); the paper does not publish its code.  The column "
    "*paper prints* holds the value the paper prints, beside the one computed here.  "
    "`fig2_dirichlet` repeats Fig. 2(a, b) on the Dirichlet(1) stand-in "
    "(`fig2_pair(instance=\"dirichlet\")`) the package used before."
)


def write_report(out: pathlib.Path, results: dict, settings: Settings, seed: int,
                 reused=(), recomputed=None) -> int:
    """Write ``report.md``: a summary, the figures, then every check; returns the failures.

    ``reused`` names the experiments taken from a previous run in ``out`` (resume).
    """
    rows = [(name, row) for name, outcome in results.items() for row in outcome.rows]
    failed = sum(row["passed"] is False for _, row in rows)
    checked = sum(row["passed"] is not None for _, row in rows)
    reused = [name for name in results if name in set(reused)]
    lines = [
        "# specdec-theory: theory vs simulation",
        "",
        f"Seed {seed}; {'quick' if settings.quick else 'default'} sizes "
        f"({settings.trials:,} base trials). {checked} checks, each at false-positive level "
        f"{DEFAULT_ALPHA:g} (budget {checked * DEFAULT_ALPHA:.1e} for the whole report): "
        f"**{checked - failed} passed, {failed} failed**"
        + (f"; {len(rows) - checked} simulated-only rows (no closed form, marked —)."
           if checked < len(rows) else "."),
        "",
        ("Reused from a previous run in this folder (same seed and sizes, not recomputed): "
         + ", ".join(reused) + "." if reused else
         "Every experiment was computed in this run."),
        *(["", "Recomputed because the stored results could not be trusted: "
           + "; ".join(f"{name} ({why})" for name, why in recomputed.items()) + "."]
          if recomputed else []),
        "",
        "| experiment | checks | passed | this run |",
        "|---|---|---|---|",
    ]
    for name, outcome in results.items():
        passed = sum(row["passed"] is True for row in outcome.rows)
        checks = sum(row["passed"] is not None for row in outcome.rows)
        lines.append(f"| [{name}](#{name}) | {checks} | {passed} | "
                     f"{'reused' if name in reused else 'computed'} |")
    lines += ["", INSTANCES, ""]
    printed = [(name, row) for name, row in rows if row.get("printed") is not None]
    if printed:
        lines += ["| experiment | quantity | computed here | paper prints | difference |",
                  "|---|---|---|---|---|"]
        lines += [f"| {name} | {row['quantity']} | {row['closed_form']:.5f} | "
                  f"{row['printed']:g} | {row['closed_form'] - row['printed']:+.4f} |"
                  for name, row in printed]
        lines.append("")
    lines += ["## Figures", ""]
    for name in results:
        lines += [f"### {figures.FIGURES[name][1]}", "", f'<a id="{name}"></a>', "",
                  f"![{name}](figures/{name}.png)", ""]
        markdown = results[name].data.get("markdown", [])  # an experiment's own tables
        lines += [markdown, ""] if isinstance(markdown, str) else markdown
    lines += [
        "## Every check",
        "",
        "*z* is the z statistic of a mean check, or Pearson's chi-square statistic of a "
        "goodness-of-fit check (its degrees of freedom in the closed-form column).",
        "",
        "| experiment | quantity | closed form | paper prints | simulated (95% CI) | z / χ² | p | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows:
        simulated = "—" if row["estimate"] is None else (
            f"{_number(row['estimate'])} ({_number(row['ci_low'])}, {_number(row['ci_high'])})")
        closed = _number(row["closed_form"]) if row["closed_form"] is not None else \
            row.get("note", "—")
        paper = "—" if row.get("printed") is None else f"{row['printed']:g}"
        verdict = "—" if row["passed"] is None else "pass" if row["passed"] else "**FAIL**"
        lines.append(f"| {name} | {row['quantity']} | {closed} | {paper} | {simulated} | "
                     f"{_number(row['z'], 3)} | {_number(row['p_value'], 3)} | {verdict} |")
    lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    return failed


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _content_hash(checks, data) -> str:
    """SHA-256 of the checks and data of a record, as canonical JSON."""
    return _sha256(json.dumps({"checks": checks, "data": data}, sort_keys=True,
                              default=float).encode())


def package_version() -> str:
    """The installed version of specdec-theory, and the record format of the experiments."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("specdec-theory")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        installed = "unknown"
    return f"{installed}+records{RECORD_FORMAT}"


def _completed(out: pathlib.Path, name: str, seed: int, settings: Settings):
    """``(outcome, None)`` for an experiment a previous run finished with the same seed and
    sizes, intact; ``(None, reason)`` when a data file exists but cannot be trusted
    (unreadable, malformed, edited or damaged — its content hash does not match —, a figure
    missing or damaged, written by another version); ``(None, None)`` when there is none.

    An experiment is complete once its JSON exists (written atomically, after its figures).
    """
    path = out / "data" / f"{name}.json"
    if not path.exists():
        return None, None
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"unreadable data file ({type(error).__name__})"
    if not isinstance(record, dict) or not isinstance(record.get("checks"), list) \
            or not isinstance(record.get("data"), dict) \
            or not all(isinstance(row, dict) and "passed" in row for row in record["checks"]):
        return None, "malformed data file"
    if record.get("format") != RECORD_FORMAT or record.get("package") != package_version():
        return None, (f"written by another version ({record.get('package', 'unrecorded')}, "
                      f"this is {package_version()})")
    same_sizes = {k: v for k, v in record.get("settings", {}).items() if k != "dask_scheduler"} \
        == {k: v for k, v in settings.describe().items() if k != "dask_scheduler"}
    if record.get("seed") != seed or not same_sizes:
        return None, "another seed or other sizes"
    if record.get("content_sha256") != _content_hash(record["checks"], record["data"]):
        return None, "content hash mismatch (edited or damaged numbers)"
    figure_hashes = record.get("figure_sha256")
    if not isinstance(figure_hashes, dict) or set(figure_hashes) != {f"{name}.png",
                                                                     f"{name}.pdf"}:
        return None, "malformed data file (figure hashes)"
    for file, digest in figure_hashes.items():
        try:
            intact = _sha256((out / "figures" / file).read_bytes()) == digest
        except OSError:
            intact = False
        if not intact:
            return None, f"figure {file} missing or damaged"
    return Outcome(record["checks"], record["data"]), None


class OutputFolderBusy(OSError):
    """Another ``specdec reproduce`` holds the output folder's lock."""


class _FolderLock:
    """An exclusive, non-blocking lock on ``out/.specdec.lock`` for the whole run: one writer
    per output folder.  The lock dies with its process (even on SIGKILL)."""

    def __init__(self, out: pathlib.Path):
        self.path = out / ".specdec.lock"

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")  # held for the whole run
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise OutputFolderBusy(
                f"another specdec reproduce (pid {holder}) is writing into "
                f"{self.path.parent}; wait for it to finish or choose another --out") from None
        self.file.truncate(0)
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
        return False


def reproduce(out="results", *, quick: bool = False, seed: int = 0, only=None,
              progress: bool = True, client=None, resume: bool = True) -> int:
    """Run the experiments (all, or those named in ``only``); returns the number of failures.

    ``client`` (a ``dask.distributed.Client``) runs the simulations' chunks on a cluster; the
    results are identical to a single-process run with the same seed.

    With ``resume`` (default), experiments that a previous (e.g. interrupted) run into the same
    folder completed with the same seed and sizes are not run again; every experiment draws
    from its own stream spawned from the seed, so the final results are identical to an
    uninterrupted run.

    Examples
    --------
    >>> import tempfile
    >>> from sim.reproduce import reproduce
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     reproduce(folder, quick=True, only=["gap"], progress=False)
    0
    """
    if not str(out).strip():
        raise ValueError(f"out must name a folder; got {str(out)!r}")
    out = pathlib.Path(out)
    with _FolderLock(out):
        return _run(out, quick, seed, only, progress, client, resume)


def _run(out, quick, seed, only, progress, client, resume) -> int:
    settings = Settings.make(quick, client)
    names = list(EXPERIMENTS) if only is None else list(only)
    unknown = [name for name in names if name not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; choose from {list(EXPERIMENTS)}")
    streams = dict(zip(EXPERIMENTS, np.random.default_rng(seed).spawn(len(EXPERIMENTS)),
                       strict=True))
    iterator = names
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(names, desc="reproduce", unit="experiment")
    results, reused, recomputed = {}, [], {}
    for name in iterator:
        previous, reason = _completed(out, name, seed, settings) if resume else (None, None)
        if previous is not None:
            results[name] = previous
            reused.append(name)
            continue
        if reason is not None:
            recomputed[name] = reason
            print(f"reproduce: recomputing {name}: {reason}", file=sys.stderr)
        started = time.perf_counter()
        outcome = EXPERIMENTS[name](settings, streams[name])
        draw, title = figures.FIGURES[name]
        files = figures.save(draw(outcome.data, title), out / "figures", name)
        # round-trip through JSON first, so the hash covers exactly what is stored
        checks, data = json.loads(json.dumps([outcome.rows, outcome.data], default=float))
        write_json_atomically(out / "data" / f"{name}.json", {
            "experiment": name, "format": RECORD_FORMAT, "package": package_version(),
            "seed": seed, "settings": settings.describe(),
            "versions": versions(), "git": git_commit(),
            "seconds": time.perf_counter() - started,
            "content_sha256": _content_hash(checks, data),
            "figure_sha256": {file: _sha256((out / "figures" / file).read_bytes())
                              for file in files},
            "checks": checks, "figures": files, "data": data})
        results[name] = outcome
    return write_report(out, results, settings, seed, reused, recomputed)
