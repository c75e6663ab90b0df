"""Figures of ``specdec reproduce``: each function draws one figure from an experiment's data.

Every figure puts the closed form and the simulated estimate (with its 95% band or error bars)
on the same axes; functions only plot — the numbers come from :mod:`sim.reproduce`.
"""

from __future__ import annotations

import os
import pathlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["FIGURES", "save"]

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
#: Legend font size of every panel.
LEGEND_SIZE = 8


def drafts_color(n_drafts: int) -> str:
    """The colour of M drafts, the same in every figure (M = 1, speculative decoding: C0)."""
    return COLORS[(int(n_drafts) - 1) % len(COLORS)]


def save(figure, directory: pathlib.Path, name: str) -> list[str]:
    """Write ``name``.png and ``name``.pdf into ``directory``; returns the file names."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for suffix in ("png", "pdf"):  # atomically: a killed run never leaves half a figure
        path = directory / f"{name}.{suffix}"
        temporary = directory / f".{name}.{suffix}.tmp"
        # no creation date in PDFs: the same data give the same bytes (content hashes)
        metadata = {"CreationDate": None} if suffix == "pdf" else None
        figure.savefig(temporary, dpi=130, bbox_inches="tight", format=suffix,
                       metadata=metadata)
        os.replace(temporary, path)
        files.append(path.name)
    plt.close(figure)
    return files


def _figure(n_panels: int = 1, *, width: float | None = None, height: float = 4.2):
    """A figure with ``n_panels`` side by side; constrained layout keeps the suptitle clear."""
    width = width or (6.4 if n_panels == 1 else 5.6 * n_panels)
    figure, axes = plt.subplots(1, n_panels, figsize=(width, height), layout="constrained")
    return figure, axes


def _label(ax, xlabel, ylabel, title=None, legend_size=LEGEND_SIZE, **legend):
    """Axis labels, optional title and the legend: the finish every panel shares."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize=legend_size, **legend)


def _running_mean(ax, series, band_label: bool):
    """A running mean (thinned: :func:`sim.reproduce.running_mean_series`), its 95% CI and
    the theory line, in the colour of its number of drafts."""
    color = drafts_color(series.get("n_drafts", 1))
    k, mean = np.asarray(series["runs"]), np.asarray(series["running_mean"])
    half = np.asarray(series["band_half_width"])
    label, theory, printed = series["label"], series["theory"], series.get("printed")
    ax.plot(k, mean, color=color, lw=1.2, label=f"{label}: simulated running mean")
    ax.fill_between(k, mean - half, mean + half, color=color, alpha=0.2, lw=0,
                    label="shaded: 95% CI of the running mean (exact σ)" if band_label else None)
    paper = "" if printed is None else f"; the paper prints {printed:g}"
    ax.axhline(theory, color=color, ls="--", lw=1, label=f"{label}: theory {theory:.2f}{paper}")


def _running_axes(ax, all_series, title=None):
    for i, series in enumerate(all_series):
        _running_mean(ax, series, band_label=i == 0)
    ax.set_xscale("log")
    _label(ax, "number of runs", "average number of rejections", title)


def running_means(data, title):
    figure, ax = _figure()
    _running_axes(ax, data["series"], title)
    return figure


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
    _label(ax, "number of drafts M (M = 1 is speculative decoding)", "E[number of rejections]",
           loc="lower left")


def rejections_vs_drafts(data, title):
    figure, ax = _figure(height=4.6)
    _draft_curves(ax, data)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title)
    return figure


def running_panels(data, title):
    figure, axes = _figure(2)
    _running_axes(axes[0], data["series"][:1], "(a) speculative decoding")
    _running_axes(axes[1], data["series"][1:], "(b) batch speculative")
    figure.suptitle(title)
    return figure


def fig5(data, title):
    figure, axes = _figure(3, width=18, height=5)
    series = data["running"]["series"]
    _running_axes(axes[0], series[:1], "(a) speculative decoding")
    _running_axes(axes[1], series[1:], "(b) batch speculative, M = 2 (paper), 4, 5")
    _draft_curves(axes[2], data["drafts"])
    axes[2].xaxis.get_major_locator().set_params(integer=True)
    axes[2].set_title("(c) rejections vs M")
    figure.suptitle(title)
    return figure


def batch_improvement(data, title):
    figure, axes = _figure(2)
    for ax, family, label in ((axes[0], "bernoulli", "u"), (axes[1], "uniform", "r")):
        for i, curve in enumerate(data[family]):
            color = COLORS[i % len(COLORS)]
            ax.plot(curve["m"], curve["theory"], "-", color=color,
                    label=f"{label} = {curve['parameter']}: closed form")
            ax.errorbar(curve["m_sim"], curve["simulated"],
                        yerr=[1.96 * e for e in curve["standard_error"]], fmt="o", ms=4,
                        color=color, capsize=3)
        _label(ax, "number of drafts M", "batch improvement BI")
    axes[0].set_title("(a) p = Ber(u), q = Ber(1/2)")
    axes[1].set_title("(b) p uniform on V = 4r tokens, q uniform on 4 of them")
    for ax in axes:
        ax.text(0.98, 0.02, "dots: simulated ± 95% CI", transform=ax.transAxes, ha="right",
                fontsize=LEGEND_SIZE)
    figure.suptitle(title)
    return figure


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
    figure, ax = _figure(height=4.5)
    tv = data["tv"]
    rho = np.linspace(0, tv, 50)
    # wide and light underneath: Decoding-OPT lies exactly on it (Theorem 5) and stays visible
    ax.plot(rho, tv - rho, "-", color="0.6", lw=5, alpha=0.5, zorder=1,
            label="Pareto front: P(reject) + Loss = TV (Thm 5); OPT lies on it")
    _rule_curves(ax, data["points"], "loss", "simulated_loss", "simulated")
    _label(ax, "rejection probability", "TV distance of the output to q", title)
    return figure


def tradeoff_chains(data, title):
    figure, axes = _figure(len(data["chains"]))
    for ax, chain in zip(np.atleast_1d(axes), data["chains"], strict=True):
        _rule_curves(ax, chain["rows"], "tv_loss", "tv_loss",
                     "simulated P(reject) ± 95% CI (loss: theory)")
        _label(ax, "rejections per position", "TV loss per position", chain["name"])
    figure.suptitle(title)
    return figure


def pmf(data, title):
    figure, ax = _figure()
    k = np.arange(len(data["pmf"]))
    counts = np.asarray(data["counts"], dtype=float)
    n = counts.sum()
    ax.bar(k, counts / n, color=COLORS[0], alpha=0.5, label=f"simulated ({int(n):,} runs)")
    ax.plot(k, data["pmf"], "k.-", lw=1, label="exact pmf (DP)")
    mask = counts > 0
    ax.set_xlim(k[mask].min() - 2, k[mask].max() + 2)
    _label(ax, "number of rejections", "probability", title)
    return figure


def walltime(data, title):
    figure, axes = _figure(2)
    window = data["window"]
    axes[0].plot(window, data["calls_theory"], "k-", label="exact DP")
    axes[0].errorbar(window, data["calls_simulated"],
                     yerr=[1.96 * e for e in data["calls_standard_error"]], fmt="o", ms=4,
                     color=COLORS[0], capsize=3, label="simulated ± 95%")
    axes[0].plot(window, data["calls_leviathan"], ":", color=COLORS[1],
                 label="Leviathan i.i.d. formula, α = 1 − mean TV")
    _label(axes[0], "window γ", "expected target calls")
    for i, (cost, speedups) in enumerate(data["speedup"].items()):
        axes[1].plot(window, speedups["exact"], "-", color=COLORS[i],
                     label=f"c = {cost}: exact (context-dependent)")
        axes[1].plot(window, speedups["leviathan"], ":", color=COLORS[i],
                     label=f"c = {cost}: Leviathan i.i.d.")
    _label(axes[1], "window γ", "speedup T / E[time] (time in target calls)")
    axes[1].set_title("c = cost of one draft token / cost of one target call",
                      fontsize=LEGEND_SIZE + 1)
    figure.suptitle(title)
    return figure


def multidraft_gap(data, title):
    figure, ax = _figure()
    for i, (name, series) in enumerate(data["series"].items()):
        ax.plot(series["m"], series["optimal"], "-", color=COLORS[i],
                label=f"{name}: optimal α*")
        ax.plot(series["m"], series["recursive"], "--", color=COLORS[i],
                label=f"{name}: paper/trie root acceptance")
    _label(ax, "number of drafts M", "root acceptance probability", title)
    return figure


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
            ax.annotate(f"γ={window}", (c, value), textcoords="offset points", xytext=(0, -12),
                        ha="center", fontsize=7, color=COLORS[1])
        ax.set_xscale("log")
        _label(ax, "cost ratio c (one drafted token = c target calls)",
               "speedup T / E[wall time]", name)
    figure.suptitle(title)
    return figure


_ZOO_STYLE = {"opt": ("k", "o-", "Decoding-OPT over ε (starts on the line at ε = 0)"),
              "target": (COLORS[1], "s--", "Decoding-UNO over ε (above the line already at ε = 0)"),
              "typical": (COLORS[2], "^", "typical acceptance, reject → q"),
              "typical_opt": (COLORS[4], "v", "typical acceptance, reject → optimal law (Thm 4)"),
              "top_k": (COLORS[3], "D:", "truncated SD, top-k"),
              "top_p": (COLORS[5], "P:", "truncated SD, top-p")}


def lossy_zoo(data, title):
    """Each scheme at (ρ̄/TV̄, Loss̄/TV̄), averages along its own output chain: in these
    coordinates every scheme's Theorem 5 line is x + y = 1."""
    figure, axes = plt.subplots(1, len(data["chains"]), figsize=(12, 5))
    for ax, chain in zip(np.atleast_1d(axes), data["chains"], strict=True):
        right = max(1.05, max(p["rejection_probability"] / p["tv"] for p in chain["points"]))
        ax.plot([0, 1, right], [1, 0, 0], color="0.6", lw=2,
                label="Thm 5 front: Loss = (TV − P(reject))₊")
        for scheme, (color, style, label) in _ZOO_STYLE.items():
            points = [p for p in chain["points"] if p["scheme"] == scheme]
            x = [p["rejection_probability"] / p["tv"] for p in points]
            y = [p["tv_loss"] / p["tv"] for p in points]
            ax.plot(x, y, style, color=color, ms=5, lw=1, label=label)
        typical = next(p for p in chain["points"] if p["scheme"] == "typical"
                       and (p["threshold"], p["alpha"]) == (0.09, 0.3))
        ax.annotate("Medusa (0.09, 0.3)", (typical["rejection_probability"] / typical["tv"],
                                            typical["tv_loss"] / typical["tv"]), fontsize=7,
                    xytext=(5, 5), textcoords="offset points")
        _label(ax, "rejections per position / TV̄", "TV loss per position / TV̄",
               chain["name"], legend_size=6)
    figure.suptitle(title)
    return figure


def block_verification(data, title):
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"token-wise": ("-", "o"), "block": ("--", "s")}
    for kind, (line, marker) in styles.items():
        fig2 = data["fig2"][kind]
        horizon = fig2["tokens_per_call_exact"][0] * fig2["calls_exact"][0]
        axes[0].plot(fig2["window"], fig2["tokens_per_call_exact"], line, color=COLORS[0],
                     label=f"Fig. 2, {kind}: exact")
        simulated = np.array(fig2["calls_simulated"])
        error = horizon / simulated**2 * 1.96 * np.array(fig2["calls_standard_error"])
        axes[0].errorbar(fig2["window"], horizon / simulated, yerr=error, fmt=marker, ms=4,
                         color=COLORS[0], capsize=3, mfc="none",
                         label=f"Fig. 2, {kind}: simulated ± 95%")
        ngram = data["ngram"][kind]
        simulated = np.array(ngram["calls_simulated"])
        error = data["ngram"]["horizon"] / simulated**2 * 1.96 * np.array(
            ngram["calls_standard_error"])
        axes[0].errorbar(ngram["window"], ngram["tokens_per_call_simulated"], yerr=error,
                         fmt=line + marker, ms=4, color=COLORS[1], capsize=3,
                         label=f"n-gram, {kind}: simulated ± 95%")
        for i, cost in enumerate(data["costs"]):
            axes[1].plot(fig2["window"], fig2["speedup"][str(cost)], line + marker, ms=4,
                         color=COLORS[2 + i], label=f"Fig. 2, c = {cost}, {kind}: exact")
    _label(axes[0], "window γ", "tokens per target call T / E[calls]")
    _label(axes[1], "window γ", "walltime factor T / E[time]")
    figure.suptitle(title)
    return figure


_VERIFIER_STYLE = {"paper": ("-o", 0), "trie": ("-s", 1), "swor": ("-^", 2),
                   "spectr": ("-v", 3), "greedy": ("-D", 4), "topk": ("-x", 5),
                   "optimal": (":P", 6)}


def multidraft_zoo(data, title):
    """Root acceptance vs M on four chains (α* in black) and E[N_rej] vs M on two."""
    m = data["m"]
    figure, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = list(data["acceptance"].items())
    for ax, (name, curves) in zip(axes.ravel()[:4], panels, strict=True):
        ax.plot(m, curves["alpha_star"], "k--", lw=2, label="α* (i.i.d. drafts' bound)")
        for verifier, (marker, color) in _VERIFIER_STYLE.items():
            values = [np.nan if v is None else v for v in curves[verifier]]
            ax.plot(m, values, marker, ms=4, lw=1, color=COLORS[color % len(COLORS)],
                    label=verifier)
        _label(ax, "number of drafts M", "root acceptance", name, legend_size=6)
    for ax, (name, curves) in zip(axes.ravel()[4:], data["rejections"].items(), strict=True):
        for verifier, (marker, color) in _VERIFIER_STYLE.items():
            values = [np.nan if v is None else v for v in curves[verifier]]
            ax.plot(m, values, marker, ms=4, lw=1, color=COLORS[color % len(COLORS)],
                    label=verifier)
        _label(ax, "number of drafts M", "E[N_rej] (exact DP)", name, legend_size=6)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


FIGURES = {
    "fig2a": (running_means,
              "Fig. 2(a): speculative decoding vs Theorem 1 (paper's instance, T = 50)"),
    "fig2b": (running_means, "Fig. 2(b): batch speculative decoding vs Theorem 3 "
                             "(paper's instance)"),
    "fig2c": (rejections_vs_drafts, "Fig. 2(c): rejections vs number of drafts "
                                    "(paper's instance)"),
    "fig2_dirichlet": (running_panels, "Fig. 2(a, b) on the Dirichlet(1) stand-in instance "
                                      "(T = 50)"),
    "fig5": (fig5, "Fig. 5: the T = 100 setting (paper's instance)"),
    "fig3": (batch_improvement, "Fig. 3: batch improvement vs M"),
    "fig4a": (pareto, "Fig. 4(a): the Pareto line of lossy verification"),
    "fig4bc": (tradeoff_chains, "Fig. 4(b, c): quality–acceleration on two Markov chains"),
    "pmf": (pmf, "Exact law of N_rej vs simulation (Fig. 2 chains, window 4)"),
    "walltime": (walltime, "Target calls and walltime vs window γ (Fig. 2 chains)"),
    "gap": (multidraft_gap, "Root acceptance: recursive verifiers vs the optimal one"),
    "windows": (window_policies, "Draft length: optimal policy vs fixed γ vs Leviathan's rule"),
    "lossy_zoo": (lossy_zoo, "Lossy zoo against Theorem 5's line (Fig. 4(a) extended)"),
    "block": (block_verification, "Token-wise vs block verification (Sun et al. 2025): "
                                  "Fig. 2 chains and the n-gram pair"),
    "multidraft": (multidraft_zoo, "Multi-draft verifiers: root acceptance vs α* and E[N_rej] "
                                   "vs M"),
}
