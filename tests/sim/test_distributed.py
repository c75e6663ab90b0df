"""Chunks on a dask cluster give bit-for-bit the single-process result; counts stream."""

import numpy as np
import pytest

from sim import simulate, simulate_counts
from sim.models import fig2_pair
from theory import BatchSpeculative, LossySpeculative, Speculative

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    # random ports for the scheduler and its dashboard: never clash with another cluster
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  scheduler_port=0, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("algorithm", [Speculative(window=3), BatchSpeculative(3, "trie"),
                                       LossySpeculative(0.1)], ids=repr)
def test_dask_equals_single_process(client, algorithm):
    draft, target = fig2_pair(horizon=20)
    kwargs = dict(n_trials=10_000, rng=42, chunk_size=1500, record_tokens=True)
    local = simulate(draft, target, algorithm, **kwargs)
    remote = simulate(draft, target, algorithm, client=client, **kwargs)
    np.testing.assert_array_equal(remote.tokens, local.tokens)
    np.testing.assert_array_equal(remote.rejections, local.rejections)
    np.testing.assert_array_equal(remote.target_calls, local.target_calls)
    counts = simulate_counts(draft, target, algorithm, n_trials=10_000, rng=42,
                             chunk_size=1500, client=client)
    np.testing.assert_array_equal(counts.rejection_counts,
                                  np.bincount(local.rejections, minlength=21))


def test_counts_equal_histograms_of_the_full_result():
    draft, target = fig2_pair()
    full = simulate(draft, target, Speculative(), n_trials=7000, rng=5, chunk_size=1000)
    counts = simulate_counts(draft, target, Speculative(), n_trials=7000, rng=5,
                             chunk_size=1000)
    np.testing.assert_array_equal(counts.rejection_counts, np.bincount(full.rejections,
                                                                       minlength=51))
    np.testing.assert_array_equal(counts.target_call_counts, np.bincount(full.target_calls,
                                                                         minlength=51))
    mean, variance = counts.rejection_moments()
    assert mean == pytest.approx(full.rejections.mean())
    assert variance == pytest.approx(full.rejections.var(ddof=1))
    assert counts.n_trials == 7000


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_reproduce_on_dask_equals_local(client, tmp_path):
    import json

    from sim.experiments import reproduce

    for folder, cluster in (("local", None), ("dask", client)):
        assert reproduce(tmp_path / folder, quick=True, only=["fig2b", "walltime"],
                         progress=False, client=cluster) == 0
    for name in ("fig2b", "walltime"):
        local = json.loads((tmp_path / "local" / "data" / f"{name}.json").read_text())
        remote = json.loads((tmp_path / "dask" / "data" / f"{name}.json").read_text())
        assert local["checks"] == remote["checks"] and local["data"] == remote["data"]
        assert remote["settings"]["dask_scheduler"].startswith("tcp://")


def _chunk_that_kills_workers(flag_folder, kills):
    """A chunk function whose first ``kills`` calls SIGKILL the worker process running them
    (each first claims a flag file with an exclusive create, so two workers starting at once
    cannot both take the same kill, and a rerun of the same chunk goes through)."""

    def run(tables, key, first, n):
        import os
        import pathlib
        import signal

        from sim.engine import run_chunk

        folder = pathlib.Path(flag_folder)
        for index in range(kills):
            try:
                os.close(os.open(folder / f"kill-{index}", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            os.kill(os.getpid(), signal.SIGKILL)
        return run_chunk(tables, key, first, n)

    return run


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("kills", [1, 2], ids=["one worker dies", "every worker dies"])
def test_losing_workers_mid_run_changes_no_bit(tmp_path, kills):
    """Worker processes killed (SIGKILL) while running chunks, after the tables were scattered:
    with one death the other worker's copy of the tables serves the rerun; when both die the
    tables are lost everywhere and the chunks are resubmitted with freshly scattered tables.
    Either way the result equals the single-process one, bit for bit."""
    from sim.engine import chunk_bounds, make_tables, run_chunk
    from sim.engine.philox import philox_key
    from sim.engine.run import _on_cluster

    draft, target = fig2_pair(horizon=20)
    tables = make_tables(draft, target, Speculative(window=3))
    key, bounds = philox_key(9), chunk_bounds(6000, 500)
    expected = [run_chunk(tables, key, first, n) for first, n in bounds]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  scheduler_port=0, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        parts = _on_cluster(client, _chunk_that_kills_workers(str(tmp_path), kills), tables,
                            key, bounds)
    assert len(list(tmp_path.iterdir())) == kills  # the faults did happen
    for got, want in zip(parts, expected, strict=True):
        np.testing.assert_array_equal(got.rejections, want.rejections)
        np.testing.assert_array_equal(got.target_calls, want.target_calls)
