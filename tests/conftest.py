"""Shared test configuration: hypothesis profiles, CUDA skips, and the false-positive budget.

**False-positive budget of the statistical suite (the one place it is stated).**  Every check
of :mod:`sim.stats` made while the tests run is counted through ``sim.stats._finish``.  Each
check at level α ≤ 1e-6 can fail a correct algorithm with probability at most α, so a run's
probability of any false failure is at most Σα over the checks whose rejection would fail
their test, plus 4e-6 for the binomial assertions of the two calibration tests (whose inner
checks run at 0.05 on purpose and are aggregated).

Which checks are those?  A check on a correct algorithm fails a green run only by rejecting.  A
check that *rejected* during a run whose tests all passed was therefore one its test required to
reject — a negative control on a known-wrong algorithm — and its α is no risk of a false failure
(a negative control can only fail by *not* rejecting, which is a matter of power, stated beside
each control).  So the budget sums α over the checks that did not reject; a negative control
that failed to reject is counted too (its test then fails anyway).  The total is printed at the
end of the run and the session fails if it exceeds 1e-3.
"""

import os

from hypothesis import HealthCheck, settings

import sim.stats

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is part of the test environment
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skip them cleanly elsewhere."""
    import pytest

    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


BUDGET_LIMIT = 1e-3
CALIBRATION_ASSERTIONS = 4 * 1e-6
_levels: list = []
_original_finish = sim.stats._finish


def _counting_finish(result):
    _levels.append((result.alpha, result.passed))
    return _original_finish(result)


sim.stats._finish = _counting_finish


def _budget():
    """(checks at level ≤ 1e-6 that did not reject, their Σα + the calibration assertions)."""
    at_risk = [alpha for alpha, passed in _levels if alpha <= 1e-6 and passed]
    return len(at_risk), sum(at_risk) + CALIBRATION_ASSERTIONS


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    count, budget = _budget()
    terminalreporter.write_line(
        f"statistical false-positive budget: {count} checks at level <= 1e-6 that did not "
        f"reject (rejections are negative controls) + 4 calibration assertions = {budget:.2e} "
        f"per run "
        f"(limit {BUDGET_LIMIT:g})")


def pytest_sessionfinish(session, exitstatus):
    if _budget()[1] > BUDGET_LIMIT and exitstatus == 0:
        session.exitstatus = 1
