r"""The lossy zoo: every lossy scheme against Theorem 5's line, Fig. 4(a) extended.

Theorem 5 bounds any verifier's per-position trade-off below by the line
Loss_TV = (TV(p, q) − P(reject))₊, which Decoding-OPT attains.  Typical acceptance (Medusa's
rule: accept x when q(x) > min(threshold, α · exp(−H(q))), with rejections resampled from q or
from Theorem 4's optimal law) and truncated SD (top-k, top-p) sit above it.  Every scheme's
(P(reject), Loss_TV) is averaged along its own output chain
(:func:`theory.lossy.chain_tradeoff`), on the Fig. 2 chains and a text n-gram pair; a table
compares typical acceptance with Decoding-OPT at equal E[N_rej]
(:func:`sim.experiments.lossy.equal_rejection_eps`) by the KL of whole sequences; the
engine's mean N_rej is checked against the DP for Medusa's defaults and top-p 0.9.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from sim.engine import simulate
from sim.experiments.common import Experiment, Outcome, mean_row
from sim.experiments.lossy import equal_rejection_eps
from sim.experiments.plotting import COLORS, LEGEND_SIZE
from sim.models import fig2_pair, ngram_pair
from sim.stats import pmf_moments
from theory import (
    LossySpeculative,
    TruncatedSpeculative,
    TypicalAcceptance,
    expected_rejections,
    rejection_pmf,
)
from theory.lossy import chain_tradeoff

__all__ = ["LOSSY_ZOO", "ZOO_EPS", "ZOO_TOP_P", "ZOO_TYPICAL", "lossy_zoo", "zoo_front"]

ZOO_EPS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
ZOO_TYPICAL = [(threshold, alpha) for threshold in (0.05, 0.09, 0.2) for alpha in (0.1, 0.3, 1.0)]
ZOO_TOP_P = (0.5, 0.8, 0.9, 0.95, 0.99)


def _zoo_point(draft, target, algorithm, **labels) -> dict:
    return {**labels, **chain_tradeoff(draft, target, algorithm),
            "rejections": float(expected_rejections(draft, target, algorithm))}


def lossy_zoo(settings, rng) -> Outcome:
    """Fig. 4(a) extended (the lossy zoo): every scheme's per-position (P(reject), Loss_TV)
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
            rows.append(mean_row(f"E[N_rej] {short} {label}", samples, mean, variance))
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


_ZOO_STYLE = {"opt": ("k", "o-", "Decoding-OPT over ε (starts on the line at ε = 0)"),
              "target": (COLORS[1], "s--", "Decoding-UNO over ε (above the line already at ε = 0)"),
              "typical": (COLORS[2], "^", "typical acceptance, reject → q"),
              "typical_opt": (COLORS[4], "v", "typical acceptance, reject → optimal law (Thm 4)"),
              "top_k": (COLORS[3], "D:", "truncated SD, top-k"),
              "top_p": (COLORS[5], "P:", "truncated SD, top-p")}


#: Schemes whose far points may leave the axes (the truncated ones reach several times TV̄).
_FAR = ("top_k", "top_p")


def zoo_front(data, title):
    """Each scheme at (ρ̄/TV̄, Loss̄/TV̄), averages along its own output chain: in these
    coordinates every scheme's Theorem 5 line is x + y = 1.  The axes frame the line and the
    other schemes; truncated-SD points beyond them are named in the panel, with their range."""
    figure, axes = plt.subplots(1, len(data["chains"]), figsize=(12, 5), layout="constrained")
    for ax, chain in zip(np.atleast_1d(axes), data["chains"], strict=True):
        xy = {scheme: [(p["rejection_probability"] / p["tv"], p["tv_loss"] / p["tv"])
                       for p in chain["points"] if p["scheme"] == scheme] for scheme in _ZOO_STYLE}
        near = [point for scheme, points in xy.items() if scheme not in _FAR for point in points]
        right = 1.15 * max(1.0, *(x for x, _ in near))
        top = 1.15 * max(1.0, *(y for _, y in near))
        ax.plot([0, 1, right], [1, 0, 0], color="0.6", lw=2,
                label="Thm 5 front: Loss = (TV − P(reject))₊")
        for scheme, (color, style, label) in _ZOO_STYLE.items():
            ax.plot(*zip(*xy[scheme], strict=True), style, color=color, ms=5, lw=1, label=label)
        far = [(x, y) for scheme in _FAR for x, y in xy[scheme] if x > right or y > top]
        if far:
            ax.text(0.98, 0.02, f"{len(far)} truncated-SD points off the axes,\nup to "
                    f"({max(x for x, _ in far):.1f}, {max(y for _, y in far):.1f})",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
        ax.set_xlim(-0.05 * right, right)
        ax.set_ylim(-0.05 * top, top)
        typical = next(p for p in chain["points"] if p["scheme"] == "typical"
                       and (p["threshold"], p["alpha"]) == (0.09, 0.3))
        ax.annotate("Medusa's defaults:\nthreshold 0.09, α = 0.3",
                    (typical["rejection_probability"] / typical["tv"],
                     typical["tv_loss"] / typical["tv"]), fontsize=7, xytext=(15, 25),
                    textcoords="offset points", arrowprops={"arrowstyle": "->", "lw": 0.8})
        ax.set(xlabel="rejections per position / TV̄", ylabel="TV loss per position / TV̄",
               title=chain["name"])
    # one legend for both panels, below them: inside, it hid the typical-acceptance points
    figure.legend(*np.atleast_1d(axes)[0].get_legend_handles_labels(), loc="outside lower center",
                  ncols=3, fontsize=LEGEND_SIZE)
    figure.suptitle(title)
    return figure


LOSSY_ZOO = Experiment("lossy_zoo", lossy_zoo, zoo_front,
                       "Lossy zoo against Theorem 5's line (Fig. 4(a) extended)",
                       caption=("Both axes are divided by TV̄, so every scheme's Theorem 5 line is "
                                "x + y = 1: Decoding-OPT lies on it, Decoding-UNO and typical "
                                "acceptance (Medusa's rule) above it, truncated SD (top-k, top-p) "
                                "right of x = 1 — more rejections than lossless SD and a loss "
                                "besides. The table below compares typical acceptance with "
                                "Decoding-OPT at equal rejections."))
