r"""Block verification (Sun et al., ICLR 2025) against token-wise verification.

Token-wise verification accepts the γ drafted tokens of a round one by one and stops at the
first rejection; block verification decides on the whole block at once and accepts, in
expectation, at least as many tokens per target call, with the same output law q.  The
experiment compares tokens per target call T / E[calls] and the walltime speedup T / E[time]
vs γ: exact (the round law of :class:`theory.BlockSpeculative`) and simulated on the Fig. 2
chains, simulated only on an n-gram pair whose exact round law is too large (S · V^γ
draft-tree leaves).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from sim.engine import simulate
from sim.experiments.common import Experiment, Outcome, mean_row, simulated_only_row
from sim.experiments.plotting import COLORS, label_axes
from sim.models import fig2_pair, ngram_pair
from sim.stats import pmf_moments
from theory import BlockSpeculative, Speculative, expected_speedup, target_calls_pmf

__all__ = ["BLOCK", "BLOCK_COSTS", "BLOCK_NGRAM_WINDOWS", "BLOCK_WINDOWS", "block_panels",
           "block_verification", "experiment_streams", "ngram_block_calls", "ngram_summary"]

#: Windows of the block-verification experiment: exact on Fig. 2 (the round law of γ = 5 is
#: 7 · 7⁵ draft-tree leaves per position, about 2 s; γ = 6 costs about 17 s), and the windows
#: simulated on the n-gram pair (V = 1000, S = 2000: S · V^γ leaves, no exact round law).
BLOCK_WINDOWS = (1, 2, 3, 4, 5)
BLOCK_NGRAM_WINDOWS = (2, 4)
BLOCK_COSTS = (0.05, 0.2)


def block_verification(settings, rng) -> Outcome:
    """Token-wise vs block verification (Sun et al., ICLR 2025): tokens per target call and
    walltime speedup vs γ, exact and simulated on Fig. 2, simulated on the n-gram pair."""
    exact_windows, ngram_windows = _windows(settings.quick)
    rows, data = [], {"fig2": {}, "ngram": {}, "costs": list(BLOCK_COSTS)}
    draft, target = fig2_pair(50, instance="paper")
    horizon = target.horizon
    kinds = {"token-wise": lambda w: Speculative(window=w), "block": BlockSpeculative}
    fig2_streams, streams = experiment_streams(rng, settings.quick)
    fig2_streams = iter(fig2_streams)
    for kind, make in kinds.items():
        entry = data["fig2"][kind] = {"window": list(exact_windows), "calls_exact": [],
                                      "calls_simulated": [], "calls_standard_error": [],
                                      "speedup": {str(c): [] for c in BLOCK_COSTS}}
        for window in exact_windows:
            algorithm = make(window)
            mean, variance = pmf_moments(target_calls_pmf(draft, target, algorithm))
            samples = simulate(draft, target, algorithm, n_trials=settings.trials // 10,
                               rng=next(fig2_streams), client=settings.client).target_calls
            row = mean_row(f"E[target calls] Fig. 2, {kind}, γ={window}", samples, mean,
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

    ngram_rows, data["ngram"] = ngram_block_calls(settings.trials // 40, ngram_windows,
                                                  list(streams), settings.client)
    return Outcome(rows + ngram_rows, data)


def _windows(quick: bool) -> tuple[tuple, tuple]:
    """(exact Fig. 2 windows, simulated n-gram windows); quick: up to 3, and one."""
    return ((1, 2, 3), (2,)) if quick else (BLOCK_WINDOWS, BLOCK_NGRAM_WINDOWS)


def experiment_streams(rng, quick: bool) -> tuple[list, list]:
    """The streams :func:`block_verification` spawns from its ``rng``: (Fig. 2, n-gram)."""
    exact_windows, ngram_windows = _windows(quick)
    streams = rng.spawn(2 * (len(exact_windows) + len(ngram_windows)))
    return streams[:2 * len(exact_windows)], streams[2 * len(exact_windows):]


def ngram_block_calls(n_trials, windows, streams, client=None) -> tuple[list, dict]:
    """Token-wise and block verification on the n-gram pair, simulated only: (rows, data).

    One stream per (kind, window), token-wise first; ``data`` holds, per kind, the simulated
    E[target calls] and standard errors per window, and the pair's sizes.

    Parameters
    ----------
    n_trials : int
        Trials per simulation (a default run: ``Settings.trials // 40`` = 5,000).
    windows : sequence of int
        The windows γ.
    streams : sequence of numpy Generators
        2 · len(windows) streams (:func:`experiment_streams` gives a run's).
    client : dask client, optional
        Where the simulations run.
    """
    draft, target = ngram_pair()
    horizon = target.horizon
    kinds = {"token-wise": lambda w: Speculative(window=w), "block": BlockSpeculative}
    streams = iter(streams)
    rows, data = [], {}
    for kind, make in kinds.items():
        entry = data[kind] = {"window": list(windows), "calls_simulated": [],
                              "calls_standard_error": [],
                              "speedup_approx": {str(c): [] for c in BLOCK_COSTS}}
        for window in windows:
            samples = simulate(draft, target, make(window), n_trials=n_trials,
                               rng=next(streams), client=client).target_calls
            row = simulated_only_row(f"E[target calls] n-gram, {kind}, γ={window}", samples)
            rows.append(row)
            entry["calls_simulated"].append(row["estimate"])
            entry["calls_standard_error"].append((row["ci_high"] - row["ci_low"]) / 3.92)
            for cost in BLOCK_COSTS:  # every round charged γ drafts: a slight underestimate
                entry["speedup_approx"][str(cost)].append(
                    horizon / (row["estimate"] * (1 + cost * window)))
        entry["tokens_per_call_simulated"] = [horizon / c for c in entry["calls_simulated"]]
    data.update(horizon=horizon, vocab_size=target.vocab_size, n_contexts=target.n_contexts,
                trials=n_trials)
    return rows, data


def ngram_summary(ngram) -> str:
    """The README's words for the n-gram half of a run: block vs token-wise E[target calls]
    per window, with the larger 95% half-width 1.96·max(se_block, se_token) at each window.

    Examples
    --------
    >>> from sim.experiments.block import ngram_summary
    >>> kind = {"window": [2], "calls_simulated": [14.5], "calls_standard_error": [0.02]}
    >>> text = ngram_summary({"block": kind, "token-wise": kind, "vocab_size": 9,
    ...                       "n_contexts": 3, "trials": 5000})
    >>> text.split(") ", 1)[1]
    '14.50 vs 14.50 target calls at γ = 2 (± 0.04 at 95 %'
    """
    block, token = ngram["block"], ngram["token-wise"]
    pairs = [f"{b:.2f} vs {t:.2f}" for b, t in zip(block["calls_simulated"],
                                                      token["calls_simulated"], strict=True)]
    windows = [f"γ = {w}" for w in block["window"]]
    halves = [f"{1.96 * max(b, t):.2f}" for b, t in zip(
        block["calls_standard_error"], token["calls_standard_error"], strict=True)]
    calls = " and ".join(f"{pair}{' target calls' if i == 0 else ''} at {window}"
                         for i, (pair, window) in enumerate(zip(pairs, windows, strict=True)))
    return (f"on the n-gram pair (V = {ngram['vocab_size']}, S = {ngram['n_contexts']}: "
            f"simulated only, {ngram['trials']:,} trials) {calls} (± {' and '.join(halves)} "
            f"at 95 %")


def block_panels(data, title):
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
    label_axes(axes[0], "window γ", "tokens per target call T / E[calls]")
    label_axes(axes[1], "window γ", "walltime factor T / E[time]")
    figure.suptitle(title)
    return figure


BLOCK = Experiment("block", block_verification, block_panels,
                   "Token-wise vs block verification (Sun et al. 2025): "
                   "Fig. 2 chains and the n-gram pair",
                   caption=("On the Fig. 2 chains block verification (dashed) gives at least as "
                            "many tokens per target call as token-wise verification (solid), equal "
                            "at γ = 1, the gain growing with γ, and simulated points agree with "
                            "the exact values; the n-gram pair is simulated only (no exact round "
                            "law). Right: the walltime factor at two draft costs."))
