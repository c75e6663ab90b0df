"""The exact DPs bound BLAS's threads while they run (theory.threads), and restore them."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import theory.threads
from theory import MarkovLM, Speculative, expected_rejections


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


class _Watching(Speculative):
    """Standard verification that records BLAS's thread count whenever the DP asks for it."""

    seen: list

    def verification(self, p, q):
        self.seen.append(_blas_threads())
        return super().verification(p, q)


@pytest.fixture
def two_blas_threads():
    if not _blas_threads():
        pytest.skip("no BLAS library loaded that threadpoolctl can see")
    with threadpool_limits(limits=2, user_api="blas"):
        if _blas_threads() != {2}:
            pytest.skip("this BLAS cannot be set to 2 threads")
        yield


@pytest.mark.parametrize("bound, expected", [(1, {1}), (None, {2})])
def test_dynamic_programs_run_with_bounded_blas_threads_and_restore_them(
        two_blas_threads, monkeypatch, bound, expected):
    monkeypatch.setattr(theory.threads, "DP_THREADS", bound)
    kernel = np.array([[0.5, 0.5], [0.2, 0.8]])
    draft = MarkovLM.homogeneous(kernel, 3)
    target = MarkovLM.homogeneous(kernel[::-1], 3)
    algorithm = _Watching()
    object.__setattr__(algorithm, "seen", [])
    expected_rejections(draft, target, algorithm)
    assert algorithm.seen and all(seen == expected for seen in algorithm.seen)
    assert _blas_threads() == {2}  # restored
