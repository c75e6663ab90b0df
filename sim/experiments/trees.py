r"""Token trees: which verifier, which sampling, which shape — and is Traversal Verification
optimal?

On the Fig. 2 chains (V = 7, T = 50) the experiment computes, exactly, tokens per target call
T / E[calls] of :class:`theory.TreeSpeculative` against the number of drafted nodes, for every
sampling ("iid", "swor", "topk") × verifier ("rrs", "traversal"), next to token-wise paths
(``Speculative(window=d)``) and block verification (``BlockSpeculative(d)``, which traversal on
a path equals); the expected accepted drafts of the first round from the prompt against the
optimal lossless tree verifier (:func:`theory.optimal_tree_acceptance`, the LP, where it is
small enough); simulated target calls checked against the exact means (compiled engine); and
simulated tokens per call on the n-gram pair (V = 1,000: no exact law).  The question "is
Traversal Verification optimal?" is answered by :func:`theory.traversal_optimality_search` on a
grid of exact two-token pairs: the largest gap LP − traversal found and the smallest
counterexample, in rationals; and Sequoia's shape against the exact optimal shape
(:func:`theory.tree_shapes.sequoia_gap`) on Fig. 2.
"""

from __future__ import annotations

from fractions import Fraction

import matplotlib.pyplot as plt

from sim.engine import simulate
from sim.experiments.common import Experiment, Outcome, mean_row, simulated_only_row
from sim.experiments.plotting import COLORS, label_axes
from sim.models import fig2_pair, ngram_pair
from sim.stats import pmf_moments
from theory import (
    BlockSpeculative,
    Speculative,
    TreeSpeculative,
    expected_target_calls,
    optimal_tree_acceptance,
    round_accepted_tokens,
    target_calls_pmf,
    traversal_optimality_search,
)
from theory.tree_shapes import exact_instance_grid, sequoia_gap

__all__ = ["TREES", "TREE_SHAPES", "exact_tables", "tree_markdown", "tree_panels", "trees"]

#: Branchings compared on Fig. 2 (quick runs keep the first two).
TREE_SHAPES = ((2,), (2, 2), (3, 3), (2, 2, 2))
SAMPLINGS = ("iid", "swor", "topk")
VERIFIERS = ("rrs", "traversal")
#: Shapes of the traversal-optimality search, smallest first.
SEARCH_SHAPES = ((1, 1), (2,), (2, 1), (1, 1, 1), (2, 2))


def _number(value):
    return str(value) if isinstance(value, Fraction) else float(value)


def exact_tables(quick: bool) -> dict:
    """The exact part of :func:`trees` (no simulation): tokens per call on Fig. 2, paths, the
    LP of the first round, the traversal-optimality search and Sequoia's gap."""
    shapes = TREE_SHAPES[:2] if quick else TREE_SHAPES
    draft, target = fig2_pair(50, instance="paper")
    horizon = target.horizon
    data = {"fig2": {}, "paths": {}, "optimum": {}}
    for sampling in SAMPLINGS:
        for verifier in VERIFIERS:
            entry = data["fig2"][f"{sampling}/{verifier}"] = {
                "branching": [str(b) for b in shapes], "nodes": [], "tokens_per_call": [],
                "accepted_first_round": []}
            for branching in shapes:
                algorithm = TreeSpeculative(branching, sampling=sampling, verifier=verifier)
                entry["nodes"].append(algorithm.n_nodes)
                entry["tokens_per_call"].append(
                    horizon / float(expected_target_calls(draft, target, algorithm)))
                entry["accepted_first_round"].append(
                    float(round_accepted_tokens(draft, target, algorithm)))
    for kind, make in {"token-wise": lambda d: Speculative(window=d),
                       "block": BlockSpeculative}.items():
        data["paths"][kind] = {"nodes": [1, 2, 3, 4], "tokens_per_call": [
            horizon / float(expected_target_calls(draft, target, make(d))) for d in (1, 2, 3, 4)]}
    for branching in ((2,), (1, 1)) if quick else ((2,), (1, 1), (3,)):  # the LP, small trees
        data["optimum"][str(branching)] = {
            "optimal": float(optimal_tree_acceptance(draft, target, branching, sampling="iid")),
            "rrs": float(round_accepted_tokens(draft, target, TreeSpeculative(branching))),
            "traversal": float(round_accepted_tokens(
                draft, target, TreeSpeculative(branching, verifier="traversal")))}
    grid = exact_instance_grid(4 if quick else 6, vocab_size=2, horizon=3)
    found = traversal_optimality_search(grid, SEARCH_SHAPES[:3] if quick else SEARCH_SHAPES,
                                        samplings=("swor",) if quick else ("iid", "swor"))
    gap, record = found["largest_traversal_gap"]
    counterexample = found["smallest_counterexample"]
    data["traversal_search"] = {
        "instances": len(grid), "rounds": found["n_rounds"],
        "uncertified": found["uncertified"], "largest_gap": _number(gap),
        "largest_gap_at": {"shape": str(record["shape"]), "sampling": record["sampling"]},
        "counterexample": None if counterexample is None else {
            "shape": str(counterexample["shape"]), "sampling": counterexample["sampling"],
            "optimum": _number(counterexample["optimum"]),
            "traversal": _number(counterexample["traversal"]),
            "draft": [str(x) for x in grid[counterexample["pair"]][0].probs[0, 0]],
            "target": [str(x) for x in grid[counterexample["pair"]][1].probs[0, 0]]},
        "path_gap_zero": all(r["optimum"] == r["traversal"] for r in found["records"]
                             if all(k == 1 for k in r["shape"]))}
    budget = 4 if quick else 8
    sequoia = sequoia_gap(draft, target, budget, sampling="iid", verifier="rrs")
    data["sequoia"] = {"n_nodes": budget, "optimal_shape": str(sequoia["optimal_shape"]),
                       "sequoia_shape": str(sequoia["sequoia_shape"]),
                       "gap": float(sequoia["gap"])}
    return data


def tree_markdown(data: dict) -> str:
    """The README's table of :func:`exact_tables` (tokens per target call on Fig. 2, T = 50)
    and its traversal-optimality sentence."""
    lines = ["| Fig. 2, T = 50: tokens per target call | "
             + " | ".join(f"branching {b}" for b in data["fig2"]["iid/rrs"]["branching"]) + " |",
             "|---|" + "---|" * len(data["fig2"]["iid/rrs"]["branching"])]
    for label, entry in data["fig2"].items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in entry["tokens_per_call"])
                     + " |")
    search = data["traversal_search"]
    example = search["counterexample"]
    lines.append("")
    lines.append(f"Traversal-optimality search: {search['rounds']} exact rounds on "
                 f"{search['instances']} two-token pairs, all LPs certified in rationals "
                 f"({search['uncertified']} uncertified); on paths LP − traversal = 0 "
                 f"everywhere ({search['path_gap_zero']}); largest gap "
                 f"{search['largest_gap']} at branching {search['largest_gap_at']['shape']} "
                 f"({search['largest_gap_at']['sampling']}); smallest counterexample: branching "
                 f"{example['shape']} ({example['sampling']}), "
                 f"p = ({', '.join(example['draft'])}), q = ({', '.join(example['target'])}): "
                 f"optimum {example['optimum']}, "
                 f"traversal {example['traversal']}.")
    return "\n".join(lines)


def trees(settings, rng) -> Outcome:
    """Tokens per target call of token trees against drafted nodes (exact, Fig. 2), the LP
    optimum per round, simulation checks, the n-gram pair, and the traversal-optimality
    search."""
    data = exact_tables(settings.quick)
    data["ngram"] = {}
    draft, target = fig2_pair(50, instance="paper")
    rows = []
    streams = iter(rng.spawn(8))
    for verifier in VERIFIERS:  # simulation against the exact law of target calls
        algorithm = TreeSpeculative((2, 2), verifier=verifier)
        mean, variance = pmf_moments(target_calls_pmf(draft, target, algorithm))
        samples = simulate(draft, target, algorithm, n_trials=settings.trials // 10,
                           rng=next(streams), client=settings.client).target_calls
        rows.append(mean_row(f"E[target calls] Fig. 2, tree (2, 2) iid, {verifier}", samples,
                             mean, variance))
    ngram_draft, ngram_target = ngram_pair()
    for label, algorithm in {"tree (2, 2) iid rrs": TreeSpeculative((2, 2)),
                             "tree (2, 2) iid traversal":
                                 TreeSpeculative((2, 2), verifier="traversal"),
                             "token-wise γ = 2": Speculative(window=2)}.items():
        samples = simulate(ngram_draft, ngram_target, algorithm,
                           n_trials=settings.trials // 100, rng=next(streams),
                           client=settings.client).target_calls
        row = simulated_only_row(f"E[target calls] n-gram, {label}", samples)
        rows.append(row)
        data["ngram"][label] = ngram_target.horizon / row["estimate"]

    return Outcome(rows, data)


def tree_panels(data, title):
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = {"iid": "o", "swor": "s", "topk": "^"}
    for label, entry in data["fig2"].items():
        sampling, verifier = label.split("/")
        axes[0].plot(entry["nodes"], entry["tokens_per_call"],
                     ("-" if verifier == "rrs" else "--") + markers[sampling], ms=5,
                     color=COLORS[SAMPLINGS.index(sampling)], label=f"tree, {sampling}, {verifier}")
    for kind, entry in data["paths"].items():
        axes[0].plot(entry["nodes"], entry["tokens_per_call"], ":" + ("x" if kind == "block"
                                                                       else "+"),
                     color="black" if kind == "block" else "grey", label=f"path, {kind}")
    label_axes(axes[0], "drafted nodes per round", "tokens per target call (exact, Fig. 2)")
    names = list(data["optimum"])
    for j, key in enumerate(("rrs", "traversal", "optimal")):
        axes[1].bar([k + 0.27 * (j - 1) for k in range(len(names))],
                    [data["optimum"][name][key] for name in names], width=0.25,
                    color=COLORS[j], label=key)
    axes[1].set_xticks(range(len(names)), [f"branching {name}" for name in names])
    label_axes(axes[1], "tree (i.i.d. drafts)", "accepted drafts, first round (exact)")
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].legend(fontsize=8)
    figure.suptitle(title)
    return figure


TREES = Experiment("trees", trees, tree_panels,
                   "Token trees on Fig. 2: samplings × verifiers, paths, block verification "
                   "and the optimal tree verifier",
                   caption=("Left: tokens per target call against drafted nodes; traversal "
                            "(dashed) is never below recursive rejection sampling (solid) for "
                            "the same sampling, and top-k trees fall far behind on these chains. "
                            "Right: the first round's accepted drafts against the optimal "
                            "lossless verifier (the LP), which neither rule reaches on a "
                            "branching tree."))
