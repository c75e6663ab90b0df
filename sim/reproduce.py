"""``specdec reproduce``: every figure of the paper and ours, and a theory-vs-simulation report.

Each experiment simulates, checks every simulated statistic against its closed form with
:mod:`sim.stats` (level :data:`sim.stats.DEFAULT_ALPHA` per check, fixed seeds, no retries),
and returns check rows plus the data of its figure.  :func:`reproduce` runs them all, writes

* ``figures/<name>.png`` and ``.pdf``,
* ``data/<name>.json`` — every number, with the seed, the configuration and package versions
  (written atomically),
* ``report.md`` — one table row per check (quantity, closed form, simulated estimate with its
  95% interval, z, p, verdict) and the figures,

and returns the number of failed checks (the command's exit status is non-zero if any fail).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from sim import figures
from sim.engine import simulate
from sim.experiments import batch_experiment, tradeoff_table
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
from sim.stats import DEFAULT_ALPHA, counts_check, mean_check, pmf_check
from theory import (
    BatchSpeculative,
    LossySpeculative,
    Speculative,
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
from theory.lossy import over_acceptance, rejection_probability, tv_loss
from theory.symbolic import leviathan_walltime_factor

__all__ = ["EXPERIMENTS", "Settings", "reproduce"]

#: Version of the experiments' definitions, stored in every data file: a resumed run recomputes
#: the files an older version wrote (version 2: Fig. 2 and Fig. 5 on the paper's instance).
RECORD_FORMAT = 2


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


def _moments(pmf):
    pmf = np.asarray(pmf, dtype=np.float64)
    k = np.arange(pmf.size)
    mean = float(k @ pmf)
    return mean, float(k**2 @ pmf - mean**2)


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


def _running(draft, target, algorithm, label, theory, settings, rng, printed=None):
    """Simulated N_rej against ``theory``; ``printed`` is the value the paper prints, if any."""
    pmf = rejection_pmf(draft, target, algorithm)
    mean, variance = _moments(pmf)
    samples = simulate(draft, target, algorithm, n_trials=settings.trials, rng=rng,
                       client=settings.client).rejections
    row = _mean_row(f"E[N_rej] {label}", samples, theory, variance)
    row["dp"] = mean
    series = {"label": label, "samples": samples.tolist(), "sd": variance ** 0.5,
              "theory": theory}
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
                         "estimate": None, "ci_low": None, "ci_high": None, "z": None,
                         "p_value": None, "passed": r["tokens_passed"],
                         "note": "chi-square vs the output model"})
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
        mean, variance = _moments(target_calls_pmf(draft, target, algorithm))
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


def _window_chain(draft, target, costs):
    """Speedup T / E[W] vs c: the optimal policy, the best fixed window (0 … W, 0 being
    autoregressive decoding), and Leviathan's rule (the γ maximizing his i.i.d. formula)."""
    horizon = target.horizon
    alpha = 1 - theorem1_rejections(draft, target) / horizon  # mean acceptance
    fixed = {w: walltime_components(draft, target, Speculative(window=w))
             for w in range(1, MAX_WINDOW + 1)}
    fixed[0] = (horizon, 0)  # window 0: autoregressive decoding
    series = {"cost": list(costs), "optimal": [], "best_fixed": [], "best_fixed_window": [],
              "leviathan": [], "leviathan_window": [], "alpha": alpha}
    for cost in costs:
        policy = optimal_window_policy(draft, target, cost_ratio=cost, max_window=MAX_WINDOW)
        series["optimal"].append(horizon / expected_walltime(draft, target, policy,
                                                             cost_ratio=cost))
        times = {w: calls + cost * drafted for w, (calls, drafted) in fixed.items()}
        best = min(times, key=times.get)
        series["best_fixed"].append(horizon / times[best])
        series["best_fixed_window"].append(best)
        rule = max(range(MAX_WINDOW + 1),  # γ = 0 gives 1: autoregressive
                   key=lambda w: float(leviathan_walltime_factor(alpha, w, cost)))
        series["leviathan"].append(horizon / times[rule])
        series["leviathan_window"].append(rule)
    return series


def windows(settings, rng) -> Outcome:
    """Optimal per-round draft lengths (exact MDP) vs the best fixed γ and Leviathan's rule, on
    the Fig. 2 chains and a text n-gram pair; the optimal policy simulated at c = 0.05, 0.2."""
    chains = {"Fig. 2 (paper's instance)": fig2_pair(50, instance="paper"),
              "text n-gram (V=100, 300 contexts, T=32)": ngram_pair(
                  vocab_size=100, max_contexts=300, horizon=32)}
    costs = WINDOW_COSTS[::2] if settings.quick else WINDOW_COSTS
    data = {"chains": {name: _window_chain(*pair, costs) for name, pair in chains.items()}}
    draft, target = chains["Fig. 2 (paper's instance)"]
    rows = []
    for cost, stream in zip((0.05, 0.2), rng.spawn(2), strict=True):
        policy = optimal_window_policy(draft, target, cost_ratio=cost, max_window=MAX_WINDOW)
        result = simulate(draft, target, policy, n_trials=settings.trials // 4, rng=stream,
                          client=settings.client)
        for label, samples, pmf in (
                ("target calls", result.target_calls, target_calls_pmf(draft, target, policy)),
                ("N_rej", result.rejections, rejection_pmf(draft, target, policy))):
            mean, variance = _moments(pmf)
            rows.append(_mean_row(f"E[{label}] optimal windows c={cost}", samples, mean,
                                  variance))
    return Outcome(rows, data)


EXPERIMENTS = {"fig2a": fig2a, "fig2b": fig2b, "fig2c": fig2c,
               "fig2_dirichlet": fig2_dirichlet, "fig5": fig5, "fig3": fig3,
               "fig4a": fig4a, "fig4bc": fig4bc, "pmf": pmf_experiment,
               "walltime": walltime, "gap": gap, "windows": windows,
               "multidraft": multidraft}


# ---------------------------------------------------------------------- the run
def versions() -> dict:
    import matplotlib
    import scipy
    import sympy

    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "sympy": sympy.__version__,
            "matplotlib": matplotlib.__version__}


def _without_samples(value):
    """The figure data minus per-run samples (kept out of the JSON files: they are large)."""
    if isinstance(value, dict):
        return {k: _without_samples(v) for k, v in value.items() if k != "samples"}
    if isinstance(value, list):
        return [_without_samples(v) for v in value]
    return value


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


def write_report(out: pathlib.Path, results: dict, settings: Settings, seed: int) -> int:
    rows = [(name, row) for name, outcome in results.items() for row in outcome.rows]
    failed = sum(not row["passed"] for _, row in rows)
    lines = [
        "# specdec-theory: theory vs simulation",
        "",
        f"Seed {seed}; {'quick' if settings.quick else 'default'} sizes "
        f"({settings.trials:,} base trials). {len(rows)} checks, each at false-positive level "
        f"{DEFAULT_ALPHA:g} (budget {len(rows) * DEFAULT_ALPHA:.1e} for the whole report): "
        f"**{len(rows) - failed} passed, {failed} failed**.",
        "",
        INSTANCES,
        "",
    ]
    printed = [(name, row) for name, row in rows if row.get("printed") is not None]
    if printed:
        lines += ["| experiment | quantity | computed here | paper prints | difference |",
                  "|---|---|---|---|---|"]
        lines += [f"| {name} | {row['quantity']} | {row['closed_form']:.5f} | "
                  f"{row['printed']:g} | {row['closed_form'] - row['printed']:+.4f} |"
                  for name, row in printed]
        lines.append("")
    lines += [
        "| experiment | quantity | closed form | paper prints | simulated (95% CI) | z | p | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows:
        simulated = "—" if row["estimate"] is None else (
            f"{_number(row['estimate'])} ({_number(row['ci_low'])}, {_number(row['ci_high'])})")
        closed = _number(row["closed_form"]) if row["closed_form"] is not None else \
            row.get("note", "—")
        paper = "—" if row.get("printed") is None else f"{row['printed']:g}"
        verdict = "pass" if row["passed"] else "**FAIL**"
        lines.append(f"| {name} | {row['quantity']} | {closed} | {paper} | {simulated} | "
                     f"{_number(row['z'], 3)} | {_number(row['p_value'], 3)} | {verdict} |")
    for name, outcome in results.items():  # an experiment's own table, if it has one
        if isinstance(outcome.data, dict) and outcome.data.get("markdown"):
            lines += ["", f"### {figures.FIGURES[name][1]}", "", outcome.data["markdown"]]
    lines += ["", "## Figures", ""]
    for name in results:
        lines += [f"### {figures.FIGURES[name][1]}", "", f"![{name}](figures/{name}.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return failed


def _completed(out: pathlib.Path, name: str, seed: int, settings: Settings):
    """The outcome of an experiment a previous run finished with the same seed and sizes.

    An experiment is complete once its JSON exists (written atomically, after its figures).
    """
    path = out / "data" / f"{name}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("format") != RECORD_FORMAT:  # written by an older version of the experiments
        return None
    same_sizes = {k: v for k, v in record.get("settings", {}).items() if k != "dask_scheduler"} \
        == {k: v for k, v in settings.describe().items() if k != "dask_scheduler"}
    figures_exist = all((out / "figures" / f"{name}.{suffix}").exists()
                        for suffix in ("png", "pdf"))
    if record.get("seed") != seed or not same_sizes or not figures_exist:
        return None
    return Outcome(record["checks"], record["data"])


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
    out = pathlib.Path(out)
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
    results = {}
    for name in iterator:
        previous = _completed(out, name, seed, settings) if resume else None
        if previous is not None:
            results[name] = previous
            continue
        started = time.perf_counter()
        outcome = EXPERIMENTS[name](settings, streams[name])
        draw, title = figures.FIGURES[name]
        files = figures.save(draw(outcome.data, title), out / "figures", name)
        write_json_atomically(out / "data" / f"{name}.json", {
            "experiment": name, "format": RECORD_FORMAT, "seed": seed,
            "settings": settings.describe(),
            "versions": versions(), "seconds": time.perf_counter() - started,
            "checks": outcome.rows, "figures": files, "data": _without_samples(outcome.data)})
        results[name] = outcome
    return write_report(out, results, settings, seed)
