"""Adaptive draft length (issue #27), exact rung: stopping rules that see the drafted tokens.

The round law of :mod:`theory.stopping` against the enumerated reference routine, the output
law = q for every rule (beside known-wrong routines that the same check catches), the threshold
rule's wall time against a brute force written here, reductions to fixed windows, the optimum
against an exhaustive search over every stop/continue policy, the ordering optimum ≤ optimal
window policy ≤ best fixed window, and bad input.  Everything in rationals.
"""

import functools
import itertools
import time
from dataclasses import dataclass
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.models import fig2_pair
from sim.reference import enumerate_outcomes, reference_simulate
from sim.strategies import model_pairs
from tests.harness import all_sequences, assert_exact_ladder
from tests.mutants import (
    BonusAfterRejectionAdaptive,
    ResampleFromTargetAdaptive,
    StartContextAdaptive,
)
from theory import (
    AdaptiveSpeculative,
    EntropyStopping,
    MarkovLM,
    Speculative,
    ThresholdStopping,
    expected_rejections,
    expected_target_calls,
    expected_walltime,
    optimal_stopping_policy,
    optimal_window_policy,
    rejection_pmf,
    round_length_pmf,
    target_calls_pmf,
)
from theory.stopping import MAX_DRAFTED_PATHS, drafted_paths

small_exact = model_pairs(exact=True, max_vocab=3, max_horizon=3, max_contexts=3)
costs = st.sampled_from([F(0), F(1, 10), F(1, 3), F(1), F(4)])


def never_stop(position, context, drafted):
    return False


def ends_with_zero(position, context, drafted):
    """An arbitrary rule that reads the drafted tokens: stop after drafting token 0."""
    return bool(drafted) and drafted[-1] == 0


def scrambled(position, context, drafted):
    """An arbitrary rule of everything it sees (stops with nothing drafted, too)."""
    return (3 * position + 5 * context + 7 * sum(drafted) + len(drafted)) % 3 == 0


def stop_at(window):
    return lambda position, context, drafted: len(drafted) >= window


def rules(draw, target):
    kind = draw(st.sampled_from(["threshold", "entropy", "optimal", "ends_with_zero",
                                 "scrambled"]))
    if kind == "threshold":
        return ThresholdStopping(draw(st.sampled_from([F(0), F(1, 5), F(1, 2), F(1)])))
    if kind == "entropy":
        return EntropyStopping(draw(st.sampled_from([F(0), F(1, 4), F(1, 2)])))
    return {"ends_with_zero": ends_with_zero, "scrambled": scrambled}.get(kind)


@settings(max_examples=60, deadline=None)
@given(pair=small_exact, data=st.data(), max_window=st.integers(1, 3), bonus=st.booleans())
def test_lossless_and_round_dp_equals_enumeration(pair, data, max_window, bonus):
    """(a), (b): for the threshold, entropy, optimal and arbitrary rules, the enumerated
    reference routine emits exactly q, and its laws of rejections and target calls equal the
    round DP's, in rationals; E[target calls] too."""
    draft, target = pair
    rule = rules(data.draw, target)
    if rule is None:  # the optimal policy for a drawn cost
        algorithm = optimal_stopping_policy(draft, target, cost_ratio=data.draw(costs),
                                            max_window=max_window, bonus=bonus)
    else:
        algorithm = AdaptiveSpeculative(rule, max_window, bonus=bonus)
    assert_exact_ladder(draft, target, algorithm)
    law = enumerate_outcomes(draft, target, algorithm)
    calls = law.target_calls_pmf()
    assert np.arange(target.horizon + 1) @ calls == \
        expected_target_calls(draft, target, algorithm)


def _first_order_pair():
    """A two-token first-order pair whose contexts matter (for the negative controls)."""
    draft = MarkovLM([[[F(1, 2), F(1, 2)], [F(1, 5), F(4, 5)]]] * 3, start=0)
    target = MarkovLM([[[F(4, 5), F(1, 5)], [F(7, 10), F(3, 10)]]] * 3, start=0)
    return draft, target


def _lossless(draft, target, algorithm) -> bool:
    law = enumerate_outcomes(draft, target, algorithm).sequence_law()
    return all(law.get(tokens, 0) == target.sequence_probability(list(tokens))
               for tokens in all_sequences(target))


@pytest.mark.parametrize("mutant", [StartContextAdaptive, ResampleFromTargetAdaptive])
def test_negative_controls_fail_the_losslessness_check(mutant):
    """The same exact check catches a routine that verifies every draft against the round's
    start context, or that resamples from q after a failed test; the correct routine passes."""
    draft, target = _first_order_pair()
    rule = ThresholdStopping(F(9, 10))  # drafts a second token after either first token
    assert _lossless(draft, target, AdaptiveSpeculative(rule, 2))
    assert not _lossless(draft, target, mutant(rule, 2))


def test_bonus_after_rejection_is_lossless_but_miscounts_target_calls():
    """Emitting the bonus after a rejection too is still lossless (a token from q in the
    right context), so losslessness cannot catch it; the round DP's law of target calls
    against the enumeration does."""
    draft, target = _first_order_pair()
    rule = ThresholdStopping(F(9, 10))
    mutant = BonusAfterRejectionAdaptive(rule, 2)
    assert _lossless(draft, target, mutant)
    assert enumerate_outcomes(draft, target, mutant).target_calls_pmf().tolist() != \
        target_calls_pmf(draft, target, mutant).tolist()


# ---------------------------------------------------------------------- (c) brute force
def brute_force_walltime(draft, target, threshold, max_window, cost_ratio, bonus=True):
    """E[wall time] of SpecDec++'s exact threshold rule, written out from its definition: for
    every round start, every drafted path (stop iff 1 − Π min(1, q/p) > threshold, or at the
    window) and every verification outcome, recursively — no code of theory.stopping."""
    horizon, following = target.horizon, target.next_context

    @functools.cache
    def remaining(n, s):  # expected wall time from a round starting at (n, s)
        if n == horizon:
            return 0
        window = min(max_window, horizon - n)

        def verify(tokens, contexts):  # expected wall time after the target call
            if not tokens:
                return sum(w * remaining(n + 1, following[s, y])
                           for y, w in enumerate(target.probs[n, s]))
            total, alive = 0, 1
            for i, (x, c) in enumerate(zip(tokens, contexts, strict=False)):
                p, q = draft.probs[n + i, c], target.probs[n + i, c]
                accept = min(1, q[x] / p[x])
                residual = [max(qy - py, 0) for py, qy in zip(p, q, strict=True)]
                if accept < 1:
                    total += alive * (1 - accept) * sum(
                        r / sum(residual) * remaining(n + i + 1, following[c, y])
                        for y, r in enumerate(residual))
                alive *= accept
            k, last = len(tokens), contexts[len(tokens)]
            if bonus and n + k < horizon:
                return total + alive * sum(w * remaining(n + k + 1, following[last, y])
                                           for y, w in enumerate(target.probs[n + k, last]))
            return total + alive * remaining(n + k, last)

        def walk(tokens, contexts, prob, accepted):
            if len(tokens) == window or 1 - accepted > threshold:
                return prob * (cost_ratio * len(tokens) + verify(tokens, contexts))
            c = contexts[-1]
            p, q = draft.probs[n + len(tokens), c], target.probs[n + len(tokens), c]
            return sum(walk((*tokens, x), (*contexts, following[c, x]), prob * w,
                            accepted * min(1, q[x] / w))
                       for x, w in enumerate(p) if w != 0)

        return 1 + walk((), (s,), 1, 1)

    return sum(w * remaining(0, s) for s, w in enumerate(target.start_distribution))


@settings(max_examples=50, deadline=None)
@given(pair=model_pairs(exact=True, max_vocab=3, max_horizon=4, max_contexts=3),
       threshold=st.sampled_from([F(0), F(1, 4), F(1, 2), F(9, 10), F(1)]),
       max_window=st.integers(1, 3), bonus=st.booleans(), cost_ratio=costs)
def test_threshold_walltime_equals_brute_force(pair, threshold, max_window, bonus, cost_ratio):
    """(c) expected_walltime of ThresholdStopping == the brute force above, exactly."""
    draft, target = pair
    algorithm = AdaptiveSpeculative(ThresholdStopping(threshold), max_window, bonus=bonus)
    assert expected_walltime(draft, target, algorithm, cost_ratio=cost_ratio) == \
        brute_force_walltime(draft, target, threshold, max_window, cost_ratio, bonus)


# ---------------------------------------------------------------------- (d) reductions
def _same_laws(draft, target, one, other):
    for function in (rejection_pmf, target_calls_pmf, round_length_pmf):
        assert function(draft, target, one).tolist() == function(draft, target, other).tolist()
    assert expected_rejections(draft, target, one) == expected_rejections(draft, target, other)
    for cost_ratio in (F(0), F(2, 7)):
        assert expected_walltime(draft, target, one, cost_ratio=cost_ratio) == \
            expected_walltime(draft, target, other, cost_ratio=cost_ratio)


@settings(max_examples=40, deadline=None)
@given(pair=model_pairs(exact=True, max_vocab=3, max_horizon=4, max_contexts=3),
       window=st.integers(1, 3), extra=st.integers(0, 2), bonus=st.booleans())
def test_reductions_to_fixed_windows(pair, window, extra, bonus):
    """(d) never stopping is Speculative(window=max_window); stopping at k = γ (below a larger
    max_window) is Speculative(window=γ): every law and the wall time, exactly."""
    draft, target = pair
    fixed = Speculative(window=window, bonus=bonus)
    _same_laws(draft, target, AdaptiveSpeculative(never_stop, window, bonus=bonus), fixed)
    _same_laws(draft, target, AdaptiveSpeculative(stop_at(window), window + extra, bonus=bonus),
               fixed)


# ---------------------------------------------------------------------- (e) exhaustive search
def _decision_nodes(target, max_window):
    """Every (n, s, drafted) where a round can ask the rule: s reachable at n (the start
    context at n = 0, every context later), |drafted| < min(W, T − n)."""
    nodes = []
    for n in range(target.horizon):
        contexts = [target.start] if n == 0 else range(target.n_contexts)
        window = min(max_window, target.horizon - n)
        for s, k in itertools.product(contexts, range(window)):
            nodes += [(n, s, d) for d in itertools.product(range(target.vocab_size), repeat=k)]
    return nodes


def _context_free(horizon):
    draft = MarkovLM.homogeneous([[F(7, 10), F(3, 10)]], horizon, next_context=[[0, 0]])
    target = MarkovLM.homogeneous([[F(2, 5), F(3, 5)]], horizon, next_context=[[0, 0]])
    return draft, target


def _two_token_chain(horizon):
    draft = MarkovLM([[[F(9, 10), F(1, 10)], [F(1, 3), F(2, 3)]]] * horizon, start=1)
    target = MarkovLM([[[F(3, 5), F(2, 5)], [F(1, 10), F(9, 10)]]] * horizon, start=1)
    return draft, target


@pytest.mark.parametrize("pair", [_context_free(3), _two_token_chain(2)],
                         ids=["context-free T=3", "first-order T=2"])
def test_optimum_equals_exhaustive_search(pair):
    """(e) V = 2, W = 2: the Bellman optimum equals the least exact wall time over every
    assignment of stop/continue to the decision nodes (2⁷ and 2⁵ policies), for costs from
    0 to large, exactly; the optimal table's own wall time is that minimum too.  On the
    context-free pair the optimum is strictly below the best window policy at c = 1/2."""
    draft, target = pair
    nodes = _decision_nodes(target, 2)
    components = []  # (E[target calls], E[drafted tokens]) of every policy: W = calls + c·d
    for choice in itertools.product((False, True), repeat=len(nodes)):
        table = dict(zip(nodes, choice, strict=True))
        rule = functools.partial(lambda t, n, s, d: t.get((n, s, d), True), table)
        algorithm = AdaptiveSpeculative(rule, 2)
        components.append((expected_walltime(draft, target, algorithm, cost_ratio=0),
                           expected_walltime(draft, target, algorithm, cost_ratio=1)))
    for cost_ratio in (F(0), F(1, 10), F(1, 3), F(1, 2), F(1), F(10)):
        best = min(calls + cost_ratio * (total - calls) for calls, total in components)
        optimum = optimal_stopping_policy(draft, target, cost_ratio=cost_ratio, max_window=2)
        assert optimum.rule.walltime == best
        assert expected_walltime(draft, target, optimum, cost_ratio=cost_ratio) == best
    if target.n_contexts == 1:  # at c = 1/2 seeing the drafts helps: 2.68 < 2.74
        windows = optimal_window_policy(draft, target, cost_ratio=F(1, 2), max_window=2)
        assert optimal_stopping_policy(draft, target, cost_ratio=F(1, 2), max_window=2) \
            .rule.walltime == F(67, 25) < expected_walltime(draft, target, windows,
                                                              cost_ratio=F(1, 2)) == F(137, 50)


# ---------------------------------------------------------------------- (f) ordering
def _ordering(draft, target, cost_ratio, max_window, slack=0):
    optimum = optimal_stopping_policy(draft, target, cost_ratio=cost_ratio,
                                      max_window=max_window)
    best = expected_walltime(draft, target, optimum, cost_ratio=cost_ratio)
    windows = expected_walltime(draft, target, optimal_window_policy(
        draft, target, cost_ratio=cost_ratio, max_window=max_window), cost_ratio=cost_ratio)
    fixed = min(expected_walltime(draft, target, Speculative(window=w), cost_ratio=cost_ratio)
                for w in range(1, max_window + 1))
    assert abs(best - optimum.rule.walltime) <= slack
    assert best <= windows + slack
    assert windows <= fixed + slack
    return best, windows, fixed


@settings(max_examples=40, deadline=None)
@given(pair=model_pairs(exact=True, max_vocab=3, max_horizon=4, max_contexts=3),
       cost_ratio=costs, max_window=st.integers(1, 3))
def test_optimum_beats_window_policy_beats_fixed_windows(pair, cost_ratio, max_window):
    """(f) optimum ≤ optimal_window_policy ≤ best fixed window, exactly."""
    _ordering(*pair, cost_ratio, max_window)


def test_ordering_on_the_fig2_chains():
    """(f) on the paper's Fig. 2 chains cut to T = 6 (V = S = 7, float): the drafts help, the
    optimum is strictly below the best window policy."""
    draft, target = fig2_pair(horizon=6)
    best, windows, _ = _ordering(draft, target, 0.2, 3, slack=1e-12)
    assert best < windows - 1e-6


# ---------------------------------------------------------------------- (g) bad input
def test_argument_validation():
    with pytest.raises(TypeError, match="rule must be a callable"):
        AdaptiveSpeculative(3, 2)
    with pytest.raises(TypeError, match="max_window must be a positive integer"):
        AdaptiveSpeculative(never_stop, 1.5)
    with pytest.raises(ValueError, match="max_window must be >= 1; got 0"):
        AdaptiveSpeculative(never_stop, 0)
    with pytest.raises(TypeError, match="bonus must be a bool"):
        AdaptiveSpeculative(never_stop, 2, bonus="yes")
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="threshold must be a real number in"):
            ThresholdStopping(bad)
    with pytest.raises(ValueError, match="scale must be a finite real number > 0"):
        EntropyStopping(0.5, scale=0)
    draft, target = _context_free(2)
    with pytest.raises(ValueError, match="cost_ratio must be a real number >= 0"):
        optimal_stopping_policy(draft, target, cost_ratio=-1, max_window=2)
    with pytest.raises(ValueError, match="max_window must be >= 1"):
        optimal_stopping_policy(draft, target, cost_ratio=0, max_window=0)
    with pytest.raises(TypeError, match="must return a bool"):
        expected_target_calls(draft, target, AdaptiveSpeculative(lambda n, s, d: None, 2))
    with pytest.raises(TypeError, match="expected_draft_lengths"):
        AdaptiveSpeculative(never_stop, 2).draft_lengths(2, 1)
    with pytest.raises(ValueError, match="max_nodes"):
        AdaptiveSpeculative(never_stop, 2).round_law(draft, target, 0, max_nodes=2)


def test_reference_only_families_are_refused_by_the_compiled_engines(monkeypatch):
    """A family registered with its reference routine only (``tables_class=None``) is refused
    by ``simulate`` with a pointer to the reference engine; the stopping family has a kernel."""
    import sim.engine.core
    from sim.engine import simulate, simulation_work

    @dataclass(frozen=True)
    class ReferenceOnly(AdaptiveSpeculative):
        pass

    monkeypatch.setitem(sim.engine.core.FAMILIES, ReferenceOnly, None)
    draft, target = _context_free(2)
    algorithm = ReferenceOnly(ThresholdStopping(F(1, 2)), 2)
    with pytest.raises(TypeError, match=r"no kernel for .* yet; use sim\.reference"):
        simulate(draft, target, algorithm, n_trials=10)
    assert simulation_work(target, algorithm, 10) == 20.0
    result = reference_simulate(draft, target, algorithm, n_trials=20, rng=0,
                                record_tokens=True)
    assert result.tokens.shape == (20, 2) and (result.target_calls >= 1).all()
    compiled = simulate(draft, target, AdaptiveSpeculative(ThresholdStopping(F(1, 2)), 2),
                        n_trials=20, rng=0)
    assert (compiled.target_calls >= 1).all()


def test_size_refusal_is_immediate():
    """(g) V = 50, T = 20, W = 10: about 10¹⁷ drafted paths, refused in well under a second
    with a one-line ValueError that gives the estimate."""
    row = [F(1, 50)] * 50
    draft = MarkovLM.homogeneous([row], 20, next_context=[[0] * 50])
    target = MarkovLM.homogeneous([row], 20, next_context=[[0] * 50])
    assert drafted_paths(50, 1, 20, 10) > MAX_DRAFTED_PATHS
    algorithm = AdaptiveSpeculative(ThresholdStopping(F(1, 2)), 10)
    for call in (lambda: expected_walltime(draft, target, algorithm, cost_ratio=0),
                 lambda: rejection_pmf(draft, target, algorithm),
                 lambda: optimal_stopping_policy(draft, target, cost_ratio=0, max_window=10)):
        started = time.perf_counter()
        with pytest.raises(ValueError, match="drafted paths") as error:
            call()
        assert time.perf_counter() - started < 1
        assert "\n" not in str(error.value) and "MAX_DRAFTED_PATHS" in str(error.value)
