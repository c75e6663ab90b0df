"""The ``stopping`` experiment: its orderings, its regrets, its counterexamples recomputed by
brute force in rationals, its simulation check beside a negative control, the README's table."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from sim.engine import simulate
from sim.experiments.common import Settings
from sim.experiments.stopping import (
    CHECK_COST,
    MAX_WINDOW,
    RULES,
    fig2_panel,
    regret_markdown,
    stopping,
    threshold_counterexamples,
)
from sim.models import fig2_pair
from sim.stats import DEFAULT_ALPHA, mean_check
from theory import AdaptiveSpeculative, expected_walltime, optimal_stopping_policy
from theory.stopping import _leaves


@pytest.fixture(scope="module")
def quick():
    return stopping(Settings.make(quick=True), np.random.default_rng(0))


def test_quick_run_orders_the_rules_and_its_checks_pass(quick):
    assert all(row["passed"] for row in quick.rows) and len(quick.rows) == 6
    exact, simulated = quick.data["panels"].values()
    for i, _ in enumerate(exact["cost"]):
        optimum = exact["optimal"]["walltime"][i]
        assert optimum <= exact["window_policy"]["walltime"][i] * (1 + 1e-12)
        assert exact["window_policy"]["walltime"][i] <= exact["fixed"]["walltime"][i] * (1 + 1e-12)
        for rule in RULES:
            assert exact[rule]["exact"] and exact[rule]["regret"][i] >= -1e-12
            assert exact[rule]["speedup"][i] == pytest.approx(12 / exact[rule]["walltime"][i])
        assert simulated["window_policy"]["walltime"][i] <= simulated["fixed"]["walltime"][i]
        assert simulated["optimal"]["walltime"][i] is None
    assert not simulated["threshold"]["exact"] and not simulated["entropy"]["exact"]
    assert simulated["window_policy"]["exact"] and "simulated" in simulated["threshold"]["note"]
    low, high = np.array(simulated["threshold"]["speedup_interval"]).T
    assert np.all(low <= simulated["threshold"]["speedup"]) \
        and np.all(simulated["threshold"]["speedup"] <= high)


# ---------------------------------------------------------------------- brute force
def _walltime(p, q, following, horizon, window, cost, stop):
    """E[target calls + c · drafted] of the generation, by enumerating every random outcome of
    the process (homogeneous rows p[s], q[s]; start context 0), in Fractions."""
    memo = {}

    def to_come(n, s):  # expected cost from a round start at (n, s)
        if n == horizon:
            return Fraction(0)
        if (n, s) not in memo:
            memo[n, s] = round_cost(n, s, (), [s], Fraction(1))
        return memo[n, s]

    def round_cost(n, s, drafted, contexts, prob):
        if len(drafted) < min(window, horizon - n) and not stop(n, s, drafted):
            c = contexts[-1]
            return sum((round_cost(n, s, (*drafted, x), [*contexts, following[c][x]],
                                   prob * p[c][x]) for x in range(2) if p[c][x]), Fraction(0))
        k, total, alive = len(drafted), prob * (1 + cost * len(drafted)), prob
        if k == 0:
            return total + prob * sum(q[s][y] * to_come(n + 1, following[s][y]) for y in range(2))
        for i, x in enumerate(drafted):
            c = contexts[i]
            accept = min(1, q[c][x] / p[c][x])
            residual = [max(0, q[c][y] - p[c][y]) for y in range(2)]
            if accept < 1:
                total += alive * (1 - accept) * sum(
                    r * to_come(n + i + 1, following[c][y])
                    for y, r in enumerate(residual)) / sum(residual)
            alive *= accept
        c = contexts[k]
        if n + k < horizon:  # the bonus token
            return total + alive * sum(q[c][y] * to_come(n + k + 1, following[c][y])
                                       for y in range(2))
        return total + alive * to_come(n + k, c)

    return to_come(0, 0)


def _nodes(p, following, horizon, window, n_contexts):
    for n in range(horizon):
        for s in range(n_contexts):
            for k in range(min(window, horizon - n)):
                for drafted in itertools.product(range(2), repeat=k):
                    c, alive = s, True
                    for x in drafted:
                        alive, c = alive and p[c][x] != 0, following[c][x]
                    if alive:
                        yield n, s, drafted


def _threshold(p, q, following, h):
    def stop(n, s, drafted):
        accepted, c = Fraction(1), s
        for x in drafted:
            accepted, c = accepted * min(1, q[c][x] / p[c][x]), following[c][x]
        return 1 - accepted > h
    return stop


@pytest.mark.parametrize("kind", ["any", "interior"])
def test_counterexamples_hold_by_brute_force(kind):
    found = threshold_counterexamples()[kind]
    p = [[Fraction(x) for x in row] for row in found["draft"]]
    q = [[Fraction(x) for x in row] for row in found["target"]]
    following, horizon = found["next_context"], found["horizon"]
    window, cost = found["max_window"], Fraction(found["cost"])
    n_contexts = len(following)
    nodes = list(_nodes(p, following, horizon, window, n_contexts))
    rules = [frozenset(c) for r in range(len(nodes) + 1)
             for c in itertools.combinations(nodes, r)]  # the continue sets: every rule
    optimum = min(_walltime(p, q, following, horizon, window, cost,
                            lambda n, s, d, keep=keep: (n, s, d) not in keep) for keep in rules)
    assert str(optimum) == found["optimal_walltime"]
    # every threshold h ∈ [0, 1] acts like one of 0 or a breakpoint; brute force a fine grid too
    grid = {Fraction(j, 720) for j in range(721)} | {Fraction(found["best_threshold"])}
    thresholds = {h: _walltime(p, q, following, horizon, window, cost,
                               _threshold(p, q, following, h)) for h in grid}
    assert str(min(thresholds.values())) == found["threshold_walltime"]
    assert str(thresholds[Fraction(found["best_threshold"])]) == found["threshold_walltime"]
    assert Fraction(found["threshold_walltime"]) > optimum
    decision = found["decision"]
    node = (decision["position"], decision["context"], tuple(decision["drafted"]))
    base = _threshold(p, q, following, Fraction(found["best_threshold"]))
    assert base(*node) == decision["threshold_stops"] != decision["optimum_stops"]
    flipped = _walltime(p, q, following, horizon, window, cost,
                        lambda *key: decision["optimum_stops"] if key == node else base(*key))
    assert Fraction(found["threshold_walltime"]) - flipped == Fraction(decision["gain"]) > 0
    if kind == "interior":
        assert node[2] and node[0] + len(node[2]) + 1 < horizon


# ---------------------------------------------------------------------- negative control
class _DraftsUntilRejection(AdaptiveSpeculative):
    """Known-wrong walltime: drafts after a round's first rejection are not counted."""

    def expected_draft_lengths(self, draft, target):
        rule = self.bound_rule(draft, target)
        out = np.zeros((target.horizon, target.n_contexts))
        for n in range(target.horizon):
            for s in range(target.n_contexts):
                window = min(self.max_window, target.horizon - n)
                for drafted, contexts, prob in _leaves(rule, draft, target, n, s, window, None):
                    alive = 1.0  # E[drafts counted] = Σ_i P(draft i is verified)
                    for i, x in enumerate(drafted):
                        out[n, s] += prob * alive
                        p, q = draft.probs[n + i, contexts[i], x], target.probs[n + i,
                                                                               contexts[i], x]
                        alive *= min(1.0, q / p)
        return out


def test_walltime_check_passes_and_its_negative_control_fails_at_the_same_size():
    """The report's check (fig2 T = 12, the optimal rule, the default run's trials) against the
    right exact wall time, and against one that drops the drafts after the first rejection."""
    draft, target = fig2_pair(12)
    policy = optimal_stopping_policy(draft, target, cost_ratio=CHECK_COST, max_window=MAX_WINDOW)
    samples = simulate(draft, target, policy, n_trials=Settings().trials // 4,
                       rng=5).walltime(CHECK_COST)
    right = float(policy.rule.walltime)
    assert right == pytest.approx(expected_walltime(draft, target, policy,
                                                    cost_ratio=CHECK_COST), rel=1e-12)
    wrong = float(expected_walltime(draft, target, _DraftsUntilRejection(
        policy.rule, MAX_WINDOW), cost_ratio=CHECK_COST))
    assert wrong < right
    assert mean_check(samples, right, alpha=DEFAULT_ALPHA).passed
    assert not mean_check(samples, wrong, alpha=DEFAULT_ALPHA).passed


@pytest.mark.slow
def test_readme_states_the_regrets_of_a_default_run():
    """The README's table comes from :func:`regret_markdown` of the exact Fig. 2 panel (the
    default run's, deterministic) and the counterexamples."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    data = {"panels": dict([fig2_panel()]), "counterexamples": threshold_counterexamples()}
    assert regret_markdown(data) in readme
