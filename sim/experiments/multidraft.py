r"""The multi-draft verifier zoo against α*: ``specdec reproduce --only multidraft``.

For every root verifier of :class:`theory.BatchSpeculative` — Algorithm 4 ("paper"), the trie,
recursive rejection sampling without replacement ("swor"), SpecTr's K-SEQ ("spectr"), Hu et
al.'s greedy drafts ("greedy"), top-k point drafts ("topk") and the α*-attaining verifier
("optimal") — it computes, exactly:

* the root acceptance α (:func:`theory.root_acceptance`) vs M on the paper's Fig. 2 chains
  (averaged over positions and contexts with the target's context marginals, weight 1/T each),
  the paper's Bernoulli example p = Ber(1/2), q = Ber(1/10), the uniform-subset example (p
  uniform on 8 tokens, q on 2) and a text n-gram pair (V = 6), beside
  α* = 1 + min_H [q(H) − p(H)^M];
* E[N_rej] vs M on the Fig. 2 chains and the text n-gram pair (exact DP);
* a table of the gap α* − α at M = 2, 4, 8.  "greedy" and "topk" draft deterministic tokens,
  not i.i.d. ones, so α* does not bound them and their gap can be negative.

and checks the compiled engine's mean N_rej against the DP for every verifier at M = 2, 4, 8
(quick runs: M ≤ 4 throughout) on Fig. 2 (:func:`sim.stats.mean_check`, level 1e-6 each).
Where "swor" would sum over more than :data:`theory.multidraft.SWOR_MAX_NODES` draft
sequences the value is left out (None).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from sim.engine import simulate
from sim.experiments.common import Experiment, Outcome, mean_row
from sim.experiments.plotting import COLORS, LEGEND_SIZE
from sim.models import bernoulli_pair, fig2_pair, ngram_pair, uniform_subset_pair
from sim.stats import pmf_moments
from theory import (
    BatchSpeculative,
    expected_rejections,
    optimal_multidraft_acceptance,
    rejection_pmf,
    root_acceptance,
)
from theory.multidraft import SWOR_MAX_NODES, _swor_nodes

__all__ = ["MULTIDRAFT", "VERIFIERS", "multidraft", "multidraft_zoo"]

VERIFIERS = ("paper", "trie", "swor", "spectr", "greedy", "topk", "optimal")
GAP_DRAFTS = (2, 4, 8)


def _chains():
    return {
        "Fig. 2 (paper's instance)": fig2_pair(50, instance="paper"),
        "Ber(1/2) draft, Ber(1/10) target": bernoulli_pair(0.5, 0.1),
        "uniform on 8 vs uniform on 2": uniform_subset_pair(8, 2),
        "text n-gram (V=6, 60 contexts, T=16)": ngram_pair(vocab_size=6, max_contexts=60,
                                                           horizon=16),
    }


def _feasible(verifier, model, n_drafts) -> bool:
    if verifier != "swor":
        return True
    return _swor_nodes(model.vocab_size, n_drafts) <= SWOR_MAX_NODES


def _acceptance_curve(draft, target, verifier, m_values):
    weights = target.context_marginals() / target.horizon  # (T, S), Σ = 1
    p, q = np.asarray(draft.probs), np.asarray(target.probs)
    if draft.is_time_homogeneous and target.is_time_homogeneous:
        p, q, weights = p[:1], q[:1], weights.sum(axis=0, keepdims=True)
    curve = []
    for m in m_values:
        if not _feasible(verifier, target, m):
            curve.append(None)
            continue
        alpha = root_acceptance(p, q, BatchSpeculative(m, verifier))
        curve.append(float((weights * alpha).sum()))
    return curve


def _star_curve(draft, target, m_values):
    weights = target.context_marginals() / target.horizon
    p, q = np.asarray(draft.probs), np.asarray(target.probs)
    return [float((weights * optimal_multidraft_acceptance(p, q, m)).sum()) for m in m_values]


def multidraft(settings, rng) -> Outcome:
    """Root acceptance and E[N_rej] vs M for every verifier, the gap to α*, checks."""
    m_values = [1, 2, 4] if settings.quick else list(range(1, 9))
    gap_drafts = [m for m in GAP_DRAFTS if m in m_values]
    chains = _chains()
    acceptance = {}
    for name, (draft, target) in chains.items():
        curves = {v: _acceptance_curve(draft, target, v, m_values) for v in VERIFIERS}
        curves["alpha_star"] = _star_curve(draft, target, m_values)
        acceptance[name] = curves
    rejections = {}
    for name in ("Fig. 2 (paper's instance)", "text n-gram (V=6, 60 contexts, T=16)"):
        draft, target = chains[name]
        rejections[name] = {v: [float(expected_rejections(draft, target, BatchSpeculative(m, v)))
                                if _feasible(v, target, m) else None for m in m_values]
                            for v in VERIFIERS}
    gap = {name: {v: {m: (None if curves[v][m_values.index(m)] is None else
                          curves["alpha_star"][m_values.index(m)] - curves[v][m_values.index(m)])
                      for m in gap_drafts} for v in VERIFIERS}
           for name, curves in acceptance.items()}
    lines = ["| chain | verifier | " + " | ".join(f"α*−α, M={m}" for m in gap_drafts) + " |",
             "|---|---|" + "---|" * len(gap_drafts)]
    for name, per_verifier in gap.items():
        for v, values in per_verifier.items():
            cells = ["n/a" if values[m] is None else f"{values[m]:+.4f}" for m in gap_drafts]
            lines.append(f"| {name} | {v} | " + " | ".join(cells) + " |")
    draft, target = chains["Fig. 2 (paper's instance)"]
    rows = []
    streams = iter(rng.spawn(len(VERIFIERS) * len(gap_drafts)))
    for v in VERIFIERS:
        for m in gap_drafts:
            algorithm = BatchSpeculative(m, v)
            mean, variance = pmf_moments(rejection_pmf(draft, target, algorithm))
            samples = simulate(draft, target, algorithm, n_trials=settings.trials // 4,
                               rng=next(streams), client=settings.client).rejections
            rows.append(mean_row(f"E[N_rej] {v} M={m} (Fig. 2)", samples, mean, variance))
    return Outcome(rows, {"m": m_values, "acceptance": acceptance, "rejections": rejections,
                          "gap": {name: {v: {str(m): value for m, value in values.items()}
                                         for v, values in per_verifier.items()}
                                  for name, per_verifier in gap.items()},
                          "markdown": "\n".join(lines)})


_VERIFIER_STYLE = {"paper": ("-o", 0), "trie": ("-s", 1), "swor": ("-^", 2),
                   "spectr": ("-v", 3), "greedy": ("-D", 4), "topk": ("-x", 5),
                   "optimal": (":P", 6)}


def multidraft_zoo(data, title):
    """Root acceptance vs M on four chains (α* a wide grey band under the verifiers: the
    optimal verifier attains it) and E[N_rej] vs M on two; one legend for all panels."""
    m = data["m"]
    figure, axes = plt.subplots(2, 3, figsize=(15, 8.5), layout="constrained")
    panels = list(data["acceptance"].items())
    for ax, (name, curves) in zip(axes.ravel()[:4], panels, strict=True):
        ax.plot(m, curves["alpha_star"], "-", color="0.6", lw=8, alpha=0.5, zorder=0,
                label="α*: best root acceptance of M i.i.d. drafts (wide grey)")
        for verifier, (marker, color) in _VERIFIER_STYLE.items():
            values = [np.nan if v is None else v for v in curves[verifier]]
            ax.plot(m, values, marker, ms=4, lw=1, color=COLORS[color % len(COLORS)],
                    label=verifier)
        ax.set(xlabel="number of drafts M", ylabel="root acceptance", title=name, xticks=m)
    for ax, (name, curves) in zip(axes.ravel()[4:], data["rejections"].items(), strict=True):
        for verifier, (marker, color) in _VERIFIER_STYLE.items():
            values = [np.nan if v is None else v for v in curves[verifier]]
            ax.plot(m, values, marker, ms=4, lw=1, color=COLORS[color % len(COLORS)],
                    label=verifier)
        ax.set(xlabel="number of drafts M", ylabel="E[N_rej] (exact DP)", title=name, xticks=m)
    # one legend below the panels, readable (per panel at size 6 it was tiny)
    figure.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center",
                  ncols=len(_VERIFIER_STYLE) + 1, fontsize=LEGEND_SIZE + 1)
    figure.suptitle(title)
    return figure


MULTIDRAFT = Experiment("multidraft", multidraft, multidraft_zoo,
                        "Multi-draft verifiers: root acceptance vs α* and E[N_rej] vs M",
                        caption=("Paper, trie, SpecTr and the optimal verifier draw M i.i.d. "
                                 "drafts: their root acceptance stays at or below the grey α* "
                                 "band, the optimal verifier on it; swor, greedy and topk draft "
                                 "otherwise and may exceed it. Bottom middle and right: E[N_rej] "
                                 "vs M from the exact DP."))
