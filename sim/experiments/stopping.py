r"""Adaptive draft length: the optimal stopping rule against SpecDec++'s threshold, an entropy
rule, the optimal per-round window and the best fixed γ.

A drafted token costs c target calls, so a generation's wall time is
E[W] = E[target calls] + c E[drafted tokens] (every drafted token counts, also those after the
first rejection).  Five ways to choose how many tokens a round drafts (at most W) are compared
by the speedup T / E[W] and the **regret** E[W] / E[W]_opt − 1 against the exact optimum:

* the optimal stopping rule (:func:`theory.optimal_stopping_policy`: an exact MDP over the
  drafted path, its value ``rule.walltime``);
* the best :class:`theory.ThresholdStopping` (stop once P(some draft rejected) > h) over the
  grid :data:`THRESHOLDS`;
* the best :class:`theory.EntropyStopping` (stop before a draft whose law has entropy
  H > h*), over h* at the quantiles :data:`ENTROPY_QUANTILES` of the draft's row entropies
  (λ = 1 − √h*, γ = 1);
* the optimal per-round window (:func:`theory.optimal_window_policy`, blind to the drafts);
* the best fixed window γ ≤ W (γ = 0: autoregressive, E[W] = T).

The optimum ≤ window policy ≤ best fixed γ is a theorem; the run raises if it fails.

**Fig. 2 chains** (T = 50, V = 7, W = 3): everything exact (:func:`theory.expected_walltime`
through :func:`theory.exact.walltime_components`, which serves every c in one pass for the rules
that do not depend on c).  **Text n-gram pair** (V = 1,000, S = 2,000, T = 32): the exact
optimum and the exact laws of the adaptive rules are out of reach (V^W drafted paths per round
start; :mod:`theory.stopping` refuses them), so the window policy and the fixed windows are
exact and the threshold and entropy rules are *simulated* (mean wall time with its 95%
interval, the best grid point per c picked on the simulated means — picked on the same
samples it is then reported with, so the best point's speedup is biased upward by up to about
the spread of the grid points' errors, ≈ 0.01 at 5,000 trials); the data and the report say
which.

**The smallest counterexample** (:func:`threshold_counterexamples`): exact pairs with V = 2 in
order of size (horizon T, contexts S, the denominator D of the probabilities, then c), compared
with the best threshold over *all* h — the rule only changes at the breakpoints 1 − A(d) of the
drafted paths, so those are searched exactly in rationals.  For each instance found the
decision (position, start context, drafted path) is reported where following the optimum
instead of the threshold gains the most.  Two searches: any decision (the threshold rule always
drafts, even where no draft can pay off at the horizon), and a decision *after* a draft, away
from the horizon.

**Simulation checks** on ``fig2_pair(horizon=12)`` at c = :data:`CHECK_COST`: the optimal rule
and the best threshold rule, simulated with the compiled kernel (:func:`sim.simulate`, one
quarter of the run's trials): mean wall time against the exact value (sample variance), target
calls and N_rej against their exact laws (exact variances).
"""

from __future__ import annotations

import itertools
import textwrap
from fractions import Fraction

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from sim.engine import simulate
from sim.experiments.common import Experiment, Outcome, mean_row
from sim.experiments.plotting import COLORS, LEGEND_SIZE
from sim.models import fig2_pair, ngram_pair
from sim.stats import pmf_moments
from theory import (
    AdaptiveSpeculative,
    EntropyStopping,
    MarkovLM,
    Speculative,
    ThresholdStopping,
    expected_walltime,
    optimal_stopping_policy,
    optimal_window_policy,
    rejection_pmf,
    target_calls_pmf,
)
from theory.exact import walltime_components
from theory.windows import _bellman

__all__ = ["CHECK_COST", "ENTROPY_QUANTILES", "MAX_WINDOW", "RULES", "STOPPING",
           "STOPPING_COSTS", "THRESHOLDS", "best_threshold", "entropy_cutoffs", "exact_panel",
           "fig2_panel", "regret_markdown", "simulated_panel", "stopping", "stopping_panels",
           "threshold_counterexamples"]

#: Cost ratios c (a drafted token costs c target calls).
STOPPING_COSTS = (0.02, 0.05, 0.1, 0.2, 0.5)
#: W, the most tokens a round drafts (the exact optimum enumerates Σ_{k≤W} V^k paths per start).
MAX_WINDOW = 3
#: SpecDec++ thresholds h searched on the Fig. 2 chains (h = 1 is the fixed window W).
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Quantiles of the draft's row entropies used as the entropy rule's cut-offs h* (1.0: never
#: stop, the fixed window W).
ENTROPY_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
#: The cost ratio of the simulation checks.
CHECK_COST = 0.2
#: Rule keys of the data, in legend order, with their labels.
RULES = {"optimal": "optimal stopping rule", "threshold": "best threshold (SpecDec++)",
         "entropy": "best entropy rule", "window_policy": "optimal per-round window",
         "fixed": "best fixed γ"}


# ---------------------------------------------------------------------- the panels
def entropy_cutoffs(draft, quantiles) -> list[float]:
    """h* at ``quantiles`` of the entropies (nats) of every draft row (position, context)."""
    probs = np.asarray(draft.probs, dtype=np.float64)
    logs = np.log(probs, where=probs > 0, out=np.zeros_like(probs))
    entropies = -(probs * logs).sum(axis=-1).ravel()
    return [float(h) for h in np.quantile(entropies, quantiles)]


def _entropy_rule(cutoff: float) -> EntropyStopping:
    """Stop before a draft whose law has entropy > ``cutoff``: 1 − √H < λ with λ = 1 − √h*."""
    return EntropyStopping(1 - cutoff ** 0.5, 1.0)


def _pick(times: dict, cost):
    """(parameter, wall time) of the least E[W] = calls + c·drafted; ties: the first key."""
    best = min(times, key=lambda key: times[key][0] + cost * times[key][1])
    return best, times[best][0] + cost * times[best][1]


def _series(costs):
    return {"cost": list(costs), **{rule: {"walltime": [], "speedup": [], "regret": [],
                                           "parameter": [], "exact": True} for rule in RULES}}


def _record(series, rule, horizon, walltime, optimum, parameter, interval=None):
    entry = series[rule]
    entry["walltime"].append(None if walltime is None else float(walltime))
    entry["speedup"].append(None if walltime is None else horizon / float(walltime))
    entry["regret"].append(None if optimum is None else float(walltime) / optimum - 1)
    entry["parameter"].append(parameter)
    if interval is not None:
        entry.setdefault("speedup_interval", []).append(
            [horizon / interval[1], horizon / interval[0]])


def _fixed_windows(draft, target, max_window) -> dict:
    fixed = {w: walltime_components(draft, target, Speculative(window=w))
             for w in range(1, max_window + 1)}
    fixed[0] = (target.horizon, 0)  # window 0: autoregressive decoding
    return fixed


def _check_order(name, cost, *walltimes) -> None:
    """optimum ≤ window policy ≤ best fixed γ (a theorem; 1e-9 relative slack for floats)."""
    for low, high in itertools.pairwise(walltimes):
        if low is not None and low > high * (1 + 1e-9):
            raise RuntimeError(f"{name}, c = {cost}: wall times {walltimes} violate "
                               "optimum <= window policy <= best fixed window")


def exact_panel(draft, target, costs, thresholds=THRESHOLDS, quantiles=ENTROPY_QUANTILES,
                max_window=MAX_WINDOW) -> dict:
    """Exact E[W], speedup and regret of the five rules vs c (module docstring)."""
    horizon = target.horizon
    cutoffs = entropy_cutoffs(draft, quantiles)
    adaptive = {"threshold": {h: walltime_components(
                    draft, target, AdaptiveSpeculative(ThresholdStopping(h), max_window))
                    for h in thresholds},
                "entropy": {h: walltime_components(
                    draft, target, AdaptiveSpeculative(_entropy_rule(h), max_window))
                    for h in cutoffs}}
    fixed = _fixed_windows(draft, target, max_window)
    series = {**_series(costs), "thresholds": list(thresholds), "entropy_cutoffs": cutoffs,
              "max_window": max_window}
    for index, cost in enumerate(costs):
        policy = optimal_stopping_policy(draft, target, cost_ratio=cost, max_window=max_window)
        optimum = float(policy.rule.walltime)
        if index == len(costs) // 2:  # the optimum's value against the exact law of its rule
            calls, drafted = walltime_components(draft, target, policy)
            if abs(calls + cost * drafted - optimum) > 1e-9 * optimum:
                raise RuntimeError(f"optimal_stopping_policy's value {optimum} differs from "
                                   f"its exact wall time {calls + cost * drafted}")
        window = optimal_window_policy(draft, target, cost_ratio=cost, max_window=max_window)
        window_time = float(expected_walltime(draft, target, window, cost_ratio=cost))
        best_fixed, fixed_time = _pick(fixed, cost)
        _check_order("exact panel", cost, optimum, window_time, fixed_time)
        _record(series, "optimal", horizon, optimum, optimum, None)
        for rule, times in adaptive.items():
            parameter, walltime = _pick(times, cost)
            if walltime < optimum * (1 - 1e-9):
                raise RuntimeError(f"{rule} rule beats the optimum at c = {cost}")
            _record(series, rule, horizon, walltime, optimum, parameter)
        _record(series, "window_policy", horizon, window_time, optimum, None)
        _record(series, "fixed", horizon, fixed_time, optimum, best_fixed)
    return series


def fig2_panel(horizon=50, costs=STOPPING_COSTS, thresholds=THRESHOLDS,
               quantiles=ENTROPY_QUANTILES) -> tuple[str, dict]:
    """(panel name, :func:`exact_panel`) on the Fig. 2 chains (paper's instance) of ``horizon``."""
    return (f"Fig. 2 (paper's instance, T={horizon}, exact)",
            exact_panel(*fig2_pair(horizon), costs, thresholds, quantiles))


def simulated_panel(draft, target, costs, thresholds, quantiles, n_trials, rng,
                    max_window=MAX_WINDOW, client=None) -> dict:
    """Exact window policy and fixed γ; threshold and entropy rules simulated (no optimum)."""
    horizon = target.horizon
    cutoffs = entropy_cutoffs(draft, quantiles)
    rules = [("threshold", h, ThresholdStopping(h)) for h in thresholds] + \
            [("entropy", h, _entropy_rule(h)) for h in cutoffs]
    samples = {}
    for (family, parameter, rule), stream in zip(rules, rng.spawn(len(rules)), strict=True):
        result = simulate(draft, target, AdaptiveSpeculative(rule, max_window),
                          n_trials=n_trials, rng=stream, client=client)
        samples.setdefault(family, {})[parameter] = result
    fixed = _fixed_windows(draft, target, max_window)
    series = {**_series(costs), "thresholds": list(thresholds), "entropy_cutoffs": cutoffs,
              "max_window": max_window, "n_trials": n_trials}
    series["optimal"].update(exact=False,
                             note="not computed: V^W drafted paths per round start")
    for family in ("threshold", "entropy"):
        series[family]["exact"] = False
        series[family]["note"] = (f"simulated ({n_trials} trials per grid point, compiled "
                                  "kernel); best grid point by simulated mean")
    for cost in costs:
        _, values = _bellman(draft, target, cost, max_window)
        window_time = float((target.start_distribution * values[0]).sum())
        best_fixed, fixed_time = _pick(fixed, cost)
        _check_order("n-gram panel", cost, None, window_time, fixed_time)
        _record(series, "optimal", horizon, None, None, None)
        for family, results in samples.items():
            means = {h: r.walltime(cost).mean() for h, r in results.items()}
            parameter = min(means, key=means.get)
            walls = results[parameter].walltime(cost)
            half = 1.96 * walls.std(ddof=1) / np.sqrt(walls.size)
            _record(series, family, horizon, means[parameter], None, parameter,
                    (means[parameter] - half, means[parameter] + half))
        _record(series, "window_policy", horizon, window_time, None, None)
        _record(series, "fixed", horizon, fixed_time, None, best_fixed)
    return series


# ---------------------------------------------------------------------- the counterexample
def _small_pairs(horizon: int, n_contexts: int, denominator: int):
    """Every time-homogeneous pair with V = 2, rows on the grid j/D (0 < j < D): S = 1 a
    context-free chain, S = 2 a first-order chain started in context 0."""
    grid = [Fraction(j, denominator) for j in range(1, denominator)]
    following = [[0, 0]] if n_contexts == 1 else [[0, 1], [0, 1]]
    for heads in itertools.product(grid, repeat=2 * n_contexts):
        p = [[a, 1 - a] for a in heads[:n_contexts]]
        q = [[a, 1 - a] for a in heads[n_contexts:]]
        yield (MarkovLM.homogeneous(p, horizon, next_context=following),
               MarkovLM.homogeneous(q, horizon, next_context=following))


def _decision_nodes(draft, target, max_window):
    """(n, s, drafted, A(drafted)) for every decision a round can face (|d| < min(W, T − n))."""
    following = target.next_context
    for n in range(target.horizon):
        window = min(max_window, target.horizon - n)
        for s in range(target.n_contexts):
            stack = [((), s, Fraction(1))]
            while stack:
                drafted, context, accepted = stack.pop()
                if len(drafted) == window:
                    continue
                yield n, s, drafted, accepted
                p = draft.probs[n + len(drafted), context]
                q = target.probs[n + len(drafted), context]
                for x in range(target.vocab_size):
                    if p[x] != 0:
                        stack.append(((*drafted, x), int(following[context, x]),
                                      accepted * min(1, q[x] / p[x])))


def best_threshold(draft, target, cost, max_window):
    """(h, E[W]) of the best ThresholdStopping over all h ∈ [0, 1]: h = 0 and every
    breakpoint 1 − A(d) (the rule is constant between breakpoints); ties: the smallest h."""
    candidates = sorted({Fraction(0)} | {1 - accepted for *_, accepted
                                         in _decision_nodes(draft, target, max_window)})
    times = {h: expected_walltime(draft, target, AdaptiveSpeculative(ThresholdStopping(h),
                                                                     max_window),
                                  cost_ratio=cost) for h in candidates}
    h = min(candidates, key=lambda key: (times[key], key))
    return h, times[h]


def _flip(rule, node, decision):
    def flipped(position, context, drafted):
        if (position, context, tuple(drafted)) == node:
            return decision
        return rule(position, context, drafted)
    return flipped


def _wrong_decision(draft, target, cost, max_window, h, optimal_rule, interior):
    """The decision node where following the optimum instead of threshold h gains most."""
    threshold = ThresholdStopping(h).bind(draft, target)
    base = expected_walltime(draft, target, AdaptiveSpeculative(threshold, max_window),
                             cost_ratio=cost)
    best = None
    for n, s, drafted, accepted in _decision_nodes(draft, target, max_window):
        node = (n, s, drafted)
        if optimal_rule(*node) == threshold(*node):
            continue
        if interior and not (drafted and n + len(drafted) + 1 < target.horizon):
            continue
        flipped = AdaptiveSpeculative(_flip(threshold, node, optimal_rule(*node)), max_window)
        gain = base - expected_walltime(draft, target, flipped, cost_ratio=cost)
        if gain > 0 and (best is None or gain > best["gain"]):
            best = {"position": n, "context": s, "drafted": list(drafted),
                    "rejection_probability": 1 - accepted, "threshold_stops": threshold(*node),
                    "optimum_stops": optimal_rule(*node), "gain": gain}
    return best


def threshold_counterexamples(horizons=(1, 2, 3), denominators=(2, 3, 4, 5, 6),
                              costs=(Fraction(1, 10), Fraction(1, 4), Fraction(1, 2)),
                              max_window=2) -> dict:
    """The first pair (order: T, S ∈ (1, 2), D, grid order, c) where the best threshold rule
    (over all h) is not optimal, for ``"any"`` decision and for an ``"interior"`` one (after a
    draft, with a bonus still possible after the next): instance, walltimes (Fractions as
    strings), the wrong decision.  Exact in rationals; None where the search finds none."""
    found = {}
    for horizon, n_contexts, denominator in itertools.product(horizons, (1, 2), denominators):
        if "any" in found and horizon < 3:  # an interior decision needs T >= 3
            continue
        for draft, target in _small_pairs(horizon, n_contexts, denominator):
            for cost in costs:
                optimum = optimal_stopping_policy(draft, target, cost_ratio=cost,
                                                  max_window=max_window)
                h, walltime = best_threshold(draft, target, cost, max_window)
                if walltime <= optimum.rule.walltime:
                    continue
                for kind in ("any", "interior"):
                    if kind in found:
                        continue
                    decision = _wrong_decision(draft, target, cost, max_window, h,
                                               optimum.rule, kind == "interior")
                    if decision is not None:
                        found[kind] = _describe(draft, target, cost, max_window, h, walltime,
                                                optimum.rule.walltime, decision)
                if len(found) == 2:
                    return found
    return {kind: found.get(kind) for kind in ("any", "interior")}


def _describe(draft, target, cost, max_window, h, walltime, optimum, decision):
    def rows(model):
        return [[str(x) for x in row] for row in model.probs[0]]

    return {"horizon": target.horizon, "n_contexts": target.n_contexts, "vocab_size": 2,
            "max_window": max_window, "draft": rows(draft), "target": rows(target),
            "next_context": target.next_context.tolist(), "cost": str(cost),
            "best_threshold": str(h), "threshold_walltime": str(walltime),
            "optimal_walltime": str(optimum), "regret": str(walltime / optimum - 1),
            "decision": {key: str(value) if isinstance(value, Fraction) else value
                         for key, value in decision.items()}}


# ---------------------------------------------------------------------- the experiment
def _simulation_rows(rng, trials, thresholds, client=None) -> list:
    """Simulations (compiled kernel) on fig2_pair(horizon=12) against the exact laws."""
    draft, target = fig2_pair(12)
    optimum = optimal_stopping_policy(draft, target, cost_ratio=CHECK_COST,
                                      max_window=MAX_WINDOW)
    h, _ = _pick({h: walltime_components(draft, target, AdaptiveSpeculative(
        ThresholdStopping(h), MAX_WINDOW)) for h in thresholds}, CHECK_COST)
    rows = []
    for (label, algorithm), stream in zip(
            (("optimal rule", optimum),
             (f"threshold h={h}", AdaptiveSpeculative(ThresholdStopping(h), MAX_WINDOW))),
            rng.spawn(2), strict=True):
        result = simulate(draft, target, algorithm, n_trials=trials, rng=stream, client=client)
        exact = expected_walltime(draft, target, algorithm, cost_ratio=CHECK_COST)
        row = mean_row(f"E[walltime] {label} c={CHECK_COST} (fig2 T=12)",
                       result.walltime(CHECK_COST), float(exact), None)
        row["note"] = "sample variance (the exact variance of W is not computed)"
        rows.append(row)
        for name, samples, pmf in (
                ("target calls", result.target_calls, target_calls_pmf(draft, target,
                                                                       algorithm)),
                ("N_rej", result.rejections, rejection_pmf(draft, target, algorithm))):
            mean, variance = pmf_moments(pmf)
            rows.append(mean_row(f"E[{name}] {label} c={CHECK_COST} (fig2 T=12)",
                                 samples, mean, variance))
    return rows


def stopping(settings, rng) -> Outcome:
    """Optimal stopping vs threshold, entropy, window policy and fixed γ, exact on the Fig. 2
    chains and partly simulated on the n-gram pair; the smallest threshold counterexample."""
    quick = settings.quick
    fig2_horizon = 12 if quick else 50
    costs = (0.05, 0.2, 0.5) if quick else STOPPING_COSTS
    thresholds = (0.3, 0.6) if quick else THRESHOLDS
    quantiles = (0.5, 1.0) if quick else ENTROPY_QUANTILES
    panels = dict([fig2_panel(fig2_horizon, costs, thresholds, quantiles)])
    vocab, contexts = (100, 100) if quick else (1000, 2000)
    ngram_name = (f"text n-gram (V={vocab}, {contexts} contexts, T=32; "
                  "threshold and entropy simulated)")
    sim_stream, ngram_stream = rng.spawn(2)
    panels[ngram_name] = simulated_panel(
        *ngram_pair(vocab_size=vocab, max_contexts=contexts, horizon=32), costs,
        (0.3, 0.6) if quick else (0.2, 0.4, 0.6, 0.8), (0.5,) if quick else (0.25, 0.5, 0.75),
        2_000 if quick else 5_000, ngram_stream, client=settings.client)
    data = {"panels": panels, "counterexamples": threshold_counterexamples(),
            "check_cost": CHECK_COST}
    rows = _simulation_rows(sim_stream, settings.trials // 4, thresholds, settings.client)
    return Outcome(rows, data)


# ---------------------------------------------------------------------- figure and README
def stopping_panels(data, title):
    """Speedup vs cost per rule, one panel per pair (its title says which rules are exact and
    which simulated); one legend below the panels (inside them it covered curves)."""
    panels = data["panels"]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 5.2),
                                layout="constrained")
    styles = {"optimal": "-o", "threshold": "--s", "entropy": "-.v", "window_policy": ":^",
              "fixed": "--D"}
    legend = {}
    for ax, (name, series) in zip(np.atleast_1d(axes), panels.items(), strict=True):
        cost = series["cost"]
        for color, (rule, label) in zip(COLORS, RULES.items(), strict=False):
            entry = series[rule]
            if all(value is None for value in entry["speedup"]):  # not computed
                continue
            (line,) = ax.plot(cost, entry["speedup"], styles[rule], ms=4, color=color)
            legend.setdefault(label, line)
            if "speedup_interval" in entry:
                low, high = np.array(entry["speedup_interval"]).T
                ax.fill_between(cost, low, high, color=color, alpha=0.2, lw=0)
                legend.setdefault("shaded: 95% interval of a simulated rule",
                                  Patch(color="0.5", alpha=0.3, lw=0))
        legend.setdefault("autoregressive", ax.axhline(1, color="0.6", lw=0.8))
        ax.set_xscale("log")
        ax.set_xticks(cost, [f"{c:g}" for c in cost], minor=False)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="cost ratio c (one drafted token = c target calls)",
               ylabel="speedup T / E[wall time]", title=textwrap.fill(name, 48))
    figure.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=4,
                  fontsize=LEGEND_SIZE + 1)
    figure.suptitle(title)
    return figure


def regret_markdown(data) -> str:
    """The README's paragraph: the exact regrets on the Fig. 2 chains, the counterexamples."""
    name, series = next((key, value) for key, value in data["panels"].items()
                        if value["optimal"]["exact"])
    lines = ["| c | " + " | ".join(RULES[rule] for rule in RULES if rule != "optimal")
             + " | optimal speedup |", "|---" * len(RULES) + "|---|"]
    for i, cost in enumerate(series["cost"]):
        cells = [f"{100 * series[rule]['regret'][i]:.2f} %" for rule in RULES
                 if rule != "optimal"]
        lines.append(f"| {cost:g} | " + " | ".join(cells)
                     + f" | {series['optimal']['speedup'][i]:.3f} |")
    text = [f"Regret E[W] / E[W]_opt − 1 on {name}, W = {series['max_window']}:", "",
            *lines, ""]
    for kind, found in data["counterexamples"].items():
        if found is None:
            continue
        d = found["decision"]
        text.append(
            f"* Smallest instance ({kind} decision): T = {found['horizon']}, "
            f"S = {found['n_contexts']}, V = 2, W = {found['max_window']}, p = "
            f"{found['draft']}, q = {found['target']}, c = {found['cost']}: best threshold "
            f"h = {found['best_threshold']} gives E[W] = {found['threshold_walltime']} against "
            f"the optimum's {found['optimal_walltime']}; at position {d['position']}, context "
            f"{d['context']}, drafted {d['drafted']} (P(reject) = "
            f"{d['rejection_probability']}) the threshold rule "
            f"{'stops' if d['threshold_stops'] else 'drafts'}, the optimum "
            f"{'stops' if d['optimum_stops'] else 'drafts'} (gain {d['gain']}).")
    return "\n".join(text)


STOPPING = Experiment("stopping", stopping, stopping_panels,
                      "Adaptive draft length: optimal stopping vs threshold, entropy and "
                      "window rules",
                      caption=("On the Fig. 2 chains the optimal stopping rule (exact; it sees the "
                               "drafted path) is at or above every other rule at each cost, the "
                               "best threshold rule (SpecDec++) close to it. On the n-gram pair "
                               "there is no exact optimum: threshold and entropy rules are "
                               "simulated (95% intervals)."))
