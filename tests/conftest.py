"""Shared test configuration: hypothesis profiles, CUDA skips, and the false-positive budget.

**False-positive budget of the statistical suite (the one place it is stated).**  Every check
of :mod:`sim.stats` made while the tests run is counted through ``sim.stats._finish``.  Each
check at level α ≤ 1e-6 can fail a correct algorithm with probability at most α, so a run's
probability of any false failure is at most Σα over those checks, plus 2e-6 for the two
binomial assertions of the calibration test (whose inner checks run at 0.05 on purpose and are
aggregated).  Negative controls are counted too (they only make the bound looser).  The total
is printed at the end of the run and the session fails if it exceeds 1e-3.
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
CALIBRATION_ASSERTIONS = 2 * 1e-6
_levels: list = []
_original_finish = sim.stats._finish


def _counting_finish(result):
    _levels.append(result.alpha)
    return _original_finish(result)


sim.stats._finish = _counting_finish


def _budget():
    strict = [alpha for alpha in _levels if alpha <= 1e-6]
    return len(strict), sum(strict) + CALIBRATION_ASSERTIONS


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    count, budget = _budget()
    terminalreporter.write_line(
        f"statistical false-positive budget: {count} checks at level <= 1e-6 (negative "
        f"controls included) + 2 calibration assertions = {budget:.2e} per run "
        f"(limit {BUDGET_LIMIT:g})")


def pytest_sessionfinish(session, exitstatus):
    if _budget()[1] > BUDGET_LIMIT and exitstatus == 0:
        session.exitstatus = 1
