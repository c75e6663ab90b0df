r"""Lossy speculative decoding (the paper's §4): Fig. 4 and the quality–acceleration sweep.

Letting the verifier accept more than min(1, q/p) trades rejections for quality.  With an
over-acceptance budget ε, Decoding-OPT (:class:`theory.LossySpeculative` with rule "opt")
rejects with probability ρ and emits a law at TV distance Loss from q on the Pareto line of
Theorem 5, ρ + Loss_TV = TV(p, q); Decoding-UNO (rule "target", rejection resampled from
q) lies above it.  The experiments:

* :func:`tradeoff_table` — per ε and rule, the exact rejections and TV loss per position
  along the output chain, the sequence KL and TV bound, with simulated checks of N_rej and
  of the emitted last token against the output model;
* :func:`equal_rejection_eps` — the ε at which Decoding-OPT reaches a given E[N_rej]
  (used by :mod:`sim.experiments.lossy_zoo`);
* ``fig4a`` — one position: (P(reject), Loss) of both rules against Theorem 5's line, the
  rejection probability and the emitted law simulated;
* ``fig4bc`` — :func:`tradeoff_table` on the Fig. 2 chains and a temperature pair.
"""

from __future__ import annotations

import numpy as np

from sim.engine import simulate
from sim.experiments.common import Experiment, Outcome, fit_row, mean_row
from sim.experiments.plotting import COLORS, label_axes, new_figure
from sim.models import context_free_pair, fig2_pair, temperature_pair
from sim.stats import DEFAULT_ALPHA, counts_check, mean_check, pmf_moments
from theory import (
    LossySpeculative,
    MarkovLM,
    expected_rejections,
    output_model,
    rejection_pmf,
    tv_distance,
)
from theory.lossy import (
    over_acceptance,
    rejection_probability,
    sequence_kl,
    sequence_tv_bound,
    tv_loss,
)

__all__ = ["FIG4A", "FIG4BC", "equal_rejection_eps", "tradeoff_table"]


def tradeoff_table(draft: MarkovLM, target: MarkovLM, eps_values, *,
                   rejections=("opt", "target"), n_trials: int = 100_000, rng=None,
                   alpha: float = DEFAULT_ALPHA, client=None) -> list[dict]:
    r"""Theory vs simulation of lossy decoding over a sweep of ε (the paper's §4).

    One row per (ε, rejection rule) with, per position (averaged over n = 1..T):

    * ``rejection_probability`` — E[N_rej] / T (exact DP);
    * ``tv_loss`` — (1/T) Σₙ E_{s∼μ^o_n}[TV(oₙ(·|s), qₙ(·|s))], which is Loss*_TV(bₙ) for OPT;

    and for whole sequences ``sequence_kl`` = KL(output ‖ target) and ``sequence_tv_bound``.
    The simulated mean of N_rej is checked against the DP (``rejections_passed``), and the
    emitted last token against the output model — not q (``tokens_passed``).

    Examples
    --------
    >>> from sim.experiments import tradeoff_table
    >>> from sim.models import fig2_pair
    >>> rows = tradeoff_table(*fig2_pair(), [0.0, 0.2], n_trials=2000, rng=0)
    >>> [(row["eps"], row["rejection"]) for row in rows]
    [(0.0, 'opt'), (0.0, 'target'), (0.2, 'opt'), (0.2, 'target')]
    """
    eps_values = list(eps_values)
    streams = np.random.default_rng(rng).spawn(len(eps_values) * len(rejections))
    horizon = target.horizon
    last = horizon - 1
    rows = []
    for i, (eps, rule) in enumerate((e, r) for e in eps_values for r in rejections):
        algorithm = LossySpeculative(eps, rule)
        emitted = output_model(draft, target, algorithm)
        mean, variance = pmf_moments(rejection_pmf(draft, target, algorithm))
        result = simulate(draft, target, algorithm, n_trials=n_trials, rng=streams[i],
                          record_tokens=True, client=client)
        check = mean_check(result.rejections, mean, variance=variance, alpha=alpha)
        last_law = np.asarray(emitted.context_marginals()[last] @ emitted.probs[last], float)
        tokens = counts_check(np.bincount(result.tokens[:, last], minlength=target.vocab_size),
                              last_law / last_law.sum(), alpha=alpha)
        rows.append({
            "eps": eps, "rejection": rule,
            "rejection_probability": mean / horizon,
            "tv_loss": sequence_tv_bound(emitted, target) / horizon,
            "sequence_kl": sequence_kl(emitted, target),
            "sequence_tv_bound": sequence_tv_bound(emitted, target),
            "simulated_rejection_probability": check.estimate / horizon,
            "standard_error": check.standard_error / horizon,
            "z": check.statistic, "p_value": check.p_value,
            "rejections_passed": check.passed, "tokens_passed": tokens.passed,
            "tokens_statistic": tokens.statistic, "tokens_p_value": tokens.p_value,
            "tokens_dof": tokens.degrees_of_freedom,
        })
    return rows


def equal_rejection_eps(draft: MarkovLM, target: MarkovLM, rejections: float, *,
                        tolerance: float = 1e-10):
    r"""The ε at which Decoding-OPT has E[N_rej] = ``rejections`` (None if no ε has).

    E[N_rej](ε) of ``LossySpeculative(ε, "opt")`` (exact DP) is continuous and non-increasing
    in ε, from Theorem 1's value at ε = 0 to 0 at ε = 1 (then q + ε ≥ p: every draft is
    accepted); the root is found by bisection to ``tolerance`` in ε.  Returns None when
    ``rejections`` exceeds the ε = 0 value (lossless SD already rejects less).

    Examples
    --------
    >>> from sim.experiments import equal_rejection_eps
    >>> from sim.models import fig2_pair
    >>> from theory import LossySpeculative, expected_rejections
    >>> draft, target = fig2_pair()
    >>> eps = equal_rejection_eps(draft, target, 10.0)
    >>> round(float(expected_rejections(draft, target, LossySpeculative(eps))), 6)
    10.0
    """
    def rejections_at(eps):
        return float(expected_rejections(draft, target, LossySpeculative(eps)))

    if rejections > rejections_at(0.0):
        return None
    low, high = 0.0, 1.0
    while high - low > tolerance:
        middle = (low + high) / 2
        low, high = (middle, high) if rejections_at(middle) > rejections else (low, middle)
    return (low + high) / 2


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
            rows.append(mean_row(f"P(reject) eps={eps} {rule}", result.rejections, rho,
                                 rho * (1 - rho)))
            counts = np.bincount(result.tokens[:, 0], minlength=10)
            rows.append(fit_row(f"emitted law eps={eps} {rule}",
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


def _rule_curves(ax, rows, loss, simulated_loss, simulated_label):
    """Decoding-OPT and -UNO: theory (P(reject), loss) as a dashed line, simulation as dots
    with the 95% interval of the simulated rejection probability."""
    for i, rule in enumerate(("opt", "target")):
        chosen = [row for row in rows if row["rejection"] == rule]
        name = "Decoding-OPT" if rule == "opt" else "Decoding-UNO"
        ax.plot([r["rejection_probability"] for r in chosen], [r[loss] for r in chosen], "--",
                color=COLORS[i], lw=1.5, zorder=3, label=f"{name}: theory")
        ax.errorbar([r["simulated_rejection_probability"] for r in chosen],
                    [r[simulated_loss] for r in chosen],
                    xerr=[1.96 * r["standard_error"] for r in chosen], fmt="o", ms=4,
                    color=COLORS[i], label=f"{name}: {simulated_label}")


def pareto(data, title):
    figure, ax = new_figure(height=4.5)
    tv = data["tv"]
    rho = np.linspace(0, tv, 50)
    # wide and light underneath: Decoding-OPT lies exactly on it (Theorem 5) and stays visible
    ax.plot(rho, tv - rho, "-", color="0.6", lw=5, alpha=0.5, zorder=1,
            label="Pareto front: P(reject) + Loss = TV (Thm 5); OPT lies on it")
    _rule_curves(ax, data["points"], "loss", "simulated_loss", "simulated")
    label_axes(ax, "rejection probability", "TV distance of the output to q", title)
    return figure


def tradeoff_chains(data, title):
    figure, axes = new_figure(len(data["chains"]))
    for ax, chain in zip(np.atleast_1d(axes), data["chains"], strict=True):
        _rule_curves(ax, chain["rows"], "tv_loss", "tv_loss",
                     "simulated P(reject) ± 95% CI (loss: theory)")
        label_axes(ax, "rejections per position", "TV loss per position", chain["name"])
    figure.suptitle(title)
    return figure


FIG4A = Experiment("fig4a", fig4a, pareto, "Fig. 4(a): the Pareto line of lossy verification",
                   caption=("Decoding-OPT's points lie on the grey Pareto line P(reject) + Loss = "
                            "TV (Theorem 5) at every ε; Decoding-UNO's lie above it: at equal "
                            "rejections it loses more quality."))
FIG4BC = Experiment("fig4bc", fig4bc, tradeoff_chains,
                    "Fig. 4(b, c): quality–acceleration on two Markov chains",
                    caption=("On whole chains too, Decoding-OPT's loss per position falls linearly "
                             "to zero as rejections rise and Decoding-UNO stays above it; "
                             "simulated points (95% CI) sit on the theory lines."))
