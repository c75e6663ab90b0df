"""Verdicts of the conformance harness (sim.conformance.verdicts): passed, failed, inconclusive;
the CLI's exit codes 0/1/2/3; located deviations; hostile verifiers.

False-positive budget: every run of a correct verifier here is one level-1e-6 check (the
report's Bonferroni level).
"""

import numpy as np
import pytest

from sim.cli import main
from sim.conformance import (
    check_verifier,
    conformance_suite,
    failure_verifier,
    reference_verifier,
    rule_verifier,
)
from theory.conformance import block_rule

SMALL = conformance_suite()[:4]
RESAMPLE = failure_verifier("resample_from_target")


# ------------------------------------------------------------------ verdicts
def test_resample_from_q_at_300_rounds_is_inconclusive_never_passed(capsys):
    """The issue's case: 300 rounds cannot see a resample-from-q bug (TV ≈ 0.25 on a few
    positions), and two pairs have no cell with two bins; the run must not pass."""
    report = check_verifier(RESAMPLE, window=3, n_rounds=300, rng=0)
    assert report.verdict == "inconclusive" and not report.passed, str(report)
    assert report.rounds_needed > 300 * 10
    text = str(report)
    assert "INCONCLUSIVE" in text and f"about {report.rounds_needed:,} rounds" in text
    assert "too few tokens to test" in text  # the 0-dof pairs are named
    assert main(["check-verifier", "sim.conformance:reference_verifier", "--window", "3",
                 "--rounds", "300"]) == 3
    assert "INCONCLUSIVE" in capsys.readouterr().out


def test_inconclusive_versus_passed_is_deterministic_given_the_sizes():
    """The design power depends on the models, γ, n_rounds and α only: equal for two
    verifiers and two seeds; at the stated rounds_needed a correct verifier passes, at 80% of
    it the run is inconclusive whatever the seed."""
    first = check_verifier(reference_verifier, window=2, n_rounds=2000, rng=0, models=SMALL,
                           min_tv=0.15)
    second = check_verifier(rule_verifier(block_rule), window=2, n_rounds=2000, rng=5,
                            models=SMALL, min_tv=0.15)
    assert [c.design_tv for c in first.checks] == [c.design_tv for c in second.checks]
    assert first.verdict == "inconclusive" and first.rounds_needed == second.rounds_needed
    needed = first.rounds_needed
    for seed in (1, 2):
        below = check_verifier(reference_verifier, window=2, n_rounds=int(0.8 * needed),
                               rng=seed, models=SMALL, min_tv=0.15)
        assert below.verdict == "inconclusive", str(below)
        at = check_verifier(reference_verifier, window=2, n_rounds=needed, rng=seed,
                            models=SMALL, min_tv=0.15)
        assert at.verdict == "passed" and at.passed and at.detectable_tv <= 0.15, str(at)


def test_design_power_matches_the_observed_power_of_a_correct_run():
    """The design TV (expected visits) and the observed one (the run's counts) differ by
    sampling noise only: within 10% on every pair at 20,000 rounds."""
    report = check_verifier(reference_verifier, window=3, n_rounds=20_000, rng=4, models=SMALL)
    for check in report.checks:
        assert check.design_tv == pytest.approx(check.min_detectable_tv, rel=0.1), check


def test_a_known_wrong_verifier_fails_and_a_failure_beats_low_power():
    """Failed whatever the power: a resample-from-q verifier at 20,000 rounds (exit 1 from the
    CLI); a verifier emitting tokens the target excludes at 300 rounds, too small for the
    χ² test to have power, fails by the support check."""
    report = check_verifier(RESAMPLE, window=3, n_rounds=20_000, rng=0, models=SMALL)
    assert report.verdict == "failed" and not report.passed

    def floored(tokens, p, q, rng):
        return reference_verifier(tokens, p, (q + 0.1) / (1 + 0.1 * q.shape[-1]), rng)

    tiny = check_verifier(floored, window=2, n_rounds=300, rng=0, models=SMALL)
    assert tiny.verdict == "failed" and tiny.support_violations, str(tiny)
    assert tiny.detectable_tv > tiny.min_tv  # the χ² test alone would be inconclusive


def test_a_correct_verifier_passes_at_the_default_size_on_the_small_pairs_size():
    """The default min_tv (0.05) is reached by every small pair at 40,000 rounds (γ = 3)."""
    report = check_verifier(reference_verifier, window=3, n_rounds=40_000, rng=8, models=SMALL)
    assert report.verdict == "passed" and report.passed, str(report)
    assert "PASSED" in str(report) and "weakest" in str(report)


def test_min_tv_is_validated_and_unpowered_pairs_alone_are_held_to_it():
    with pytest.raises(ValueError, match="min_tv must be"):
        check_verifier(reference_verifier, window=2, min_tv=0)
    large = conformance_suite()[-1]
    assert not large.powered
    report = check_verifier(reference_verifier, window=3, n_rounds=200, rng=0, models=large)
    assert report.checks[0].powered and report.verdict == "inconclusive"


def test_sequence_level_has_a_design_power_too():
    from sim.conformance import sequence_suite

    report = check_verifier(reference_verifier, window=3, n_rounds=300,
                            models=sequence_suite()[:1], level="sequence", rng=0)
    assert report.verdict == "inconclusive" and report.rounds_needed > 300
    enough = check_verifier(reference_verifier, window=3, n_rounds=report.rounds_needed,
                            models=sequence_suite()[:1], level="sequence", rng=0)
    assert enough.verdict == "passed", str(enough)
    assert np.isfinite(enough.detectable_tv)


# ------------------------------------------------------------------ hostile verifiers
def _counting(verifier):
    def wrapped(*args):
        wrapped.calls += 1
        return verifier(*args)

    wrapped.calls = 0
    return wrapped


def test_sys_exit_and_any_base_exception_are_verifier_errors_but_ctrl_c_passes():
    import sys

    from sim.conformance import VerifierError

    def exits(tokens, p, q, rng):
        sys.exit(0)

    with pytest.raises(VerifierError, match=r"called sys.exit\(0\)") as caught:
        check_verifier(exits, window=2, n_rounds=100, rng=0, models=SMALL)
    assert "\n" not in str(caught.value) and "suite pair" in str(caught.value)

    def generator_exit(tokens, p, q, rng):
        raise GeneratorExit("odd")

    with pytest.raises(VerifierError, match="raised GeneratorExit: odd"):
        check_verifier(generator_exit, window=2, n_rounds=100, rng=0, models=SMALL)

    def interrupted(tokens, p, q, rng):
        raise KeyboardInterrupt

    for timeout in (None, 5):
        with pytest.raises(KeyboardInterrupt):
            check_verifier(interrupted, window=2, n_rounds=100, rng=0, models=SMALL,
                           timeout=timeout)


def test_a_hung_call_ends_the_run_within_the_timeout_with_one_line():
    import threading
    import time

    from sim.conformance.calls import VerifierTimeout

    release = threading.Event()

    def hangs(tokens, p, q, rng):
        release.wait(60)  # ended by the test below, so no thread outlives it
        return reference_verifier(tokens, p, q, rng)

    start = time.perf_counter()
    try:
        with pytest.raises(VerifierTimeout, match=r"did not return within timeout = 1 s") \
                as caught:
            check_verifier(hangs, window=2, n_rounds=100, rng=0, models=SMALL, timeout=1)
    finally:
        release.set()
    assert time.perf_counter() - start < 10 and "\n" not in str(caught.value)
    assert "cannot stop a thread" in str(caught.value)
    with pytest.raises(ValueError, match="timeout must be"):
        check_verifier(reference_verifier, window=2, timeout=0)


@pytest.mark.parametrize("dtype, value", [(np.uint64, 2 ** 64 - 1), (np.uint8, 200),
                                          (np.int16, -2), (np.int32, 7)])
def test_tokens_outside_the_vocabulary_are_refused_in_every_integer_dtype(dtype, value):
    from sim.conformance import VerifierError

    def wrong(tokens, p, q, rng):
        out = reference_verifier(tokens, p, q, rng).astype(dtype)
        out[0, 0] = value
        return out

    with pytest.raises(VerifierError, match=rf"token {value} \({np.dtype(dtype)}\) at row 0"):
        check_verifier(wrong, window=2, n_rounds=100, rng=0, models=SMALL)

    def narrow(tokens, p, q, rng):  # in range, small dtype: fine
        return reference_verifier(tokens, p, q, rng).astype(np.int8)

    assert check_verifier(narrow, window=2, n_rounds=100, rng=0, models=SMALL).verdict \
        != "failed"


def test_huge_runs_are_refused_up_front_and_huge_windows_cost_nothing():
    import time

    counted = _counting(reference_verifier)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"n_rounds = 1,000,000,000 .* estimated .* max_work"):
        check_verifier(counted, window=3, n_rounds=10 ** 9)
    with pytest.raises(ValueError, match="max_work"):
        check_verifier(counted, window=3, n_rounds=10 ** 12)
    assert counted.calls == 0 and time.perf_counter() - start < 5
    # γ ≥ T drafts to the horizon: the same run as γ = T, at once
    start = time.perf_counter()
    huge = check_verifier(reference_verifier, window=100_000, n_rounds=500, rng=0, models=SMALL)
    same = check_verifier(reference_verifier, window=8, n_rounds=500, rng=0, models=SMALL)
    assert time.perf_counter() - start < 10 and huge.window == 100_000
    assert [c.statistic for c in huge.checks] == [c.statistic for c in same.checks]


@pytest.mark.parametrize("output, message", [
    (lambda rows: rows * np.nan, "returned nan at row 0"),
    (lambda rows: -rows, "returned -"),
    (lambda rows: rows * 0, "all-zero row 0"),
    (lambda rows: rows[:, :2], "returned shape"),
    (lambda rows: 1 / 0, "raised ZeroDivisionError"),
])
def test_a_bad_draft_processor_is_blamed_on_the_processor_before_any_call(output, message):
    from sim.conformance import VerifierError

    counted = _counting(reference_verifier)
    with pytest.raises(ValueError, match=f"draft_processor on suite pair .*{message}") as caught:
        check_verifier(counted, window=2, n_rounds=100, rng=0, models=SMALL,
                       draft_processor=output)
    assert not isinstance(caught.value, VerifierError) and counted.calls == 0


def test_torch_threads_are_bounded_during_the_run_and_restored():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    seen = []

    def records(tokens, p, q, rng):
        seen.append(torch.get_num_threads())
        return reference_verifier(tokens, p, q, rng)

    check_verifier(records, window=2, n_rounds=200, rng=0, models=SMALL)
    assert set(seen) == {1} and torch.get_num_threads() == before
    seen.clear()
    check_verifier(records, window=2, n_rounds=200, rng=0, models=SMALL, threads=2,
                   timeout=None)
    assert set(seen) == {2} and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be"):
        check_verifier(records, window=2, threads=0)


# ------------------------------------------------------------------ the CLI, in a subprocess
HOSTILE = '''
import sys
import numpy as np
from helper import SHIFT  # a module beside this file: imported as `python FILE.py` would

def exits(tokens, p, q, rng):
    sys.exit(0)

def spins(tokens, p, q, rng):
    while True:
        pass

def wide(tokens, p, q, rng):
    out = np.zeros((tokens.shape[0], tokens.shape[1] + 1), dtype=np.uint64)
    out[:] = 2 ** 64 - 1 + SHIFT
    return out
'''


def _cli(tmp_path, *argv, timeout=60):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sim.cli", "check-verifier", *argv],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=os.getcwd())


def test_the_cli_ends_hostile_verifiers_with_one_line(tmp_path):
    import time

    (tmp_path / "hostile.py").write_text(HOSTILE, encoding="utf-8")
    (tmp_path / "helper.py").write_text("SHIFT = 0\n", encoding="utf-8")
    spec = str(tmp_path / "hostile.py")
    small = ["--window", "2", "--rounds", "300"]
    for name, options, message in [
            ("exits", [], "called sys.exit(0)"),
            ("spins", ["--timeout", "2"], "did not return within timeout = 2 s"),
            ("wide", [], "token 18446744073709551615 (uint64)")]:
        start = time.perf_counter()
        done = _cli(tmp_path, f"{spec}:{name}", *small, *options)
        assert done.returncode == 2, (name, done.stderr)
        assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert time.perf_counter() - start < 30, name
    done = _cli(tmp_path, "sim.conformance:reference_verifier", "--window", "3",
                "--rounds", "1e9")
    assert done.returncode == 2 and "max_work" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and not done.stdout


# ------------------------------------------------------------------ located failures
def test_a_failed_report_locates_the_deviation_and_estimates_its_tv():
    """resample-from-q on the small pairs at 20,000 rounds: the report lists the most
    significant (pair, position, context, token) cells with observed and expected frequencies
    and Wilson intervals; its per-position TV estimate is within 0.05 of the exact TV of the
    bug (theory.conformance.deviation) at every position of `context_free` (S = 1); and the
    resample-from-q law is no mixture, so no mixture hint is given."""
    from theory.conformance import FAILURE_MODES, deviation

    report = check_verifier(RESAMPLE, window=3, n_rounds=20_000, rng=0, models=SMALL)
    assert report.verdict == "failed" and len(report.deviations) == 10
    first = report.deviations[0]
    assert first.p_value < 1e-20 and not first.low <= first.expected <= first.high
    assert f"position {first.position}, context {first.context}, token {first.token}" \
        in str(report)
    assert [d.p_value for d in report.deviations] == sorted(d.p_value for d in report.deviations)
    assert not any(c.closest_law for c in report.checks), str(report)
    free = next(c for c in report.checks if c.name == "context_free")
    pair = next(p for p in SMALL if p.name == "context_free")
    exact = deviation(pair.draft, pair.target, 3, FAILURE_MODES["resample_from_target"].rule,
                      max_sequences=0).per_position_tv
    for position, estimate, low, high in free.tv_estimates:
        assert low <= estimate <= high
        assert abs(estimate - exact[position]) < 0.05, (position, estimate, exact[position])
    assert "largest estimated TV at position" in str(report)


def test_the_mixture_hint_appears_only_when_the_mixture_fits_and_lossless_runs_locate_nothing():
    """Negative control: a verifier whose output law is exactly 0.6·q + 0.4·p at every position
    (a documented-lossy ensemble) fails, and the hint names w ≈ 0.6 because that mixture fits;
    a lossless run at the same size has no deviations and no TV estimates."""
    def mixture(tokens, p, q, rng):
        rows, k = tokens.shape
        law = 0.6 * q[:, 0] + 0.4 * p[:, 0]
        token = (np.cumsum(law, axis=1) <= rng.random(rows)[:, None]).sum(axis=1)
        out = np.full((rows, k + 1), -1, dtype=np.int64)
        out[:, 0] = np.minimum(token, law.shape[1] - 1)
        return out

    report = check_verifier(mixture, window=3, n_rounds=20_000, rng=1, models=SMALL[:1])
    assert report.verdict == "failed"
    weight = float(report.checks[0].closest_law.split("w = ")[1].split(" ")[0])
    assert 0.5 <= weight <= 0.7, report.checks[0].closest_law
    clean = check_verifier(reference_verifier, window=3, n_rounds=20_000, rng=1,
                           models=SMALL[:1])
    assert clean.verdict != "failed" and not clean.deviations
    assert not clean.checks[0].tv_estimates and "where:" not in str(clean)
