"""What every experiment of ``specdec reproduce`` shares: its sizes, its outcome, its check rows.

An experiment is a function ``(settings, rng) -> Outcome``: it simulates with the sizes of
:class:`Settings`, checks every simulated statistic against its closed form with
:mod:`sim.stats` (level :data:`sim.stats.DEFAULT_ALPHA` per check, fixed seeds, no retries),
and returns the check rows and the data its figure draws.  A row is a dict (``quantity``,
``closed_form``, ``estimate``, its 95% interval, ``z``, ``p_value``, ``passed``);
:func:`mean_row` checks a mean against its exact value with the exact variance (a z test),
:func:`fit_row` records a chi-square goodness-of-fit check, :func:`simulated_only_row` an
estimate with no closed form (``passed`` is None).  :func:`running_mean_series` thins a
running mean x̄ₖ to log-spaced k with its band x̄ₖ ± 1.96 σ/√k, and
:func:`running_rejections` is the running-mean experiment of the Fig. 2 family (E[N_rej] of
one algorithm against its theorem).  :class:`Experiment` is one registration: a name, the
function that runs it, the one that draws its figure, the figure's title and its caption.

Every file a run writes (figures, data, the report) goes through :func:`atomic_output`: a
temporary file beside it, renamed over it (``os.replace``) only once completely written, so a
full disk or a killed run never leaves a truncated result — a report that says "N passed"
is a whole report — and a failed write leaves no temporary behind.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sim.engine import simulate
from sim.stats import DEFAULT_ALPHA, mean_check, pmf_moments
from theory import rejection_pmf

__all__ = ["RUNNING_POINTS", "Experiment", "Outcome", "OutputError", "Settings", "atomic_output",
           "fit_row", "mean_row", "running_mean_series", "running_rejections",
           "simulated_only_row", "write_text_atomically"]


@dataclass(frozen=True)
class Settings:
    """Sizes of a run: the default takes a few minutes on 2 cores, ``quick`` under one."""

    trials: int = 200_000
    max_drafts: int = 8
    quick: bool = False
    client: object = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, quick: bool, client=None) -> Settings:
        if quick:
            return cls(trials=20_000, max_drafts=5, quick=True, client=client)
        return cls(client=client)

    def describe(self) -> dict:
        """The settings as JSON-ready values (the cluster appears as its address, if any)."""
        address = getattr(getattr(self.client, "scheduler", None), "address", None)
        return {"trials": self.trials, "max_drafts": self.max_drafts, "quick": self.quick,
                "dask_scheduler": address}


@dataclass
class Outcome:
    """What an experiment returns: its check rows and the data of its figure."""

    rows: list = field(default_factory=list)
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """One experiment of the report: ``run(settings, rng)`` makes its :class:`Outcome`,
    ``draw(outcome.data, title)`` its figure, saved as ``<name>.png`` and ``<name>.pdf``;
    ``caption`` tells the report's reader what to look for in that figure."""

    name: str
    run: Callable[[Settings, np.random.Generator], Outcome]
    draw: Callable[[dict, str], object]
    title: str
    caption: str


class OutputError(OSError):
    """A result file could not be written (a full disk, a read-only folder, ...); nothing
    partial was left behind.  Its message is one line naming the file and the reason."""

    def __str__(self) -> str:
        return str(self.args[-1])


def _disk_error(error: BaseException) -> OSError | None:
    """The ``OSError`` behind ``error`` (itself, or one it was raised from or while handling:
    a writer may report a full disk as another exception raised in its cleanup)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def atomic_output(path):
    """Write ``path`` atomically: yield a temporary path beside it for the block to write, then
    rename it onto ``path`` (``os.replace``).

    If the block or the rename fails, the temporary file is removed and ``path`` is left as it
    was (absent, or the previous complete file); a failure that comes from the file system
    (``OSError``, e.g. ``ENOSPC``, possibly wrapped by the writer) is raised as one
    :class:`OutputError` line naming ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder is created if needed.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_output(folder / "table.csv") as temporary:
    ...     _ = temporary.write_text("a,b\\n")
    >>> sorted(file.name for file in folder.iterdir())
    ['table.csv']
    """
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        cause = _disk_error(error)
        if cause is None or isinstance(cause, OutputError):
            raise
        reason = cause.strerror or str(cause) or type(cause).__name__
        raise OutputError(cause.errno, f"cannot write {path}: {reason}") from error


def write_text_atomically(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        file.write(text)


def mean_row(quantity: str, samples, mean: float, variance: float | None) -> dict:
    """A row checking the mean of ``samples`` against ``mean`` (z test, exact variance)."""
    check = mean_check(samples, mean, variance=variance, alpha=DEFAULT_ALPHA, name=quantity)
    low, high = check.confidence_interval()
    return {"quantity": quantity, "closed_form": mean, "estimate": check.estimate,
            "ci_low": low, "ci_high": high, "z": check.statistic, "p_value": check.p_value,
            "passed": check.passed}


def fit_row(quantity: str, check) -> dict:
    """A row recording a chi-square goodness-of-fit ``check`` (no single closed form)."""
    return {"quantity": quantity, "closed_form": None, "estimate": None, "ci_low": None,
            "ci_high": None, "z": check.statistic, "p_value": check.p_value,
            "passed": check.passed, "note": f"chi-square, {check.degrees_of_freedom} dof"}


def simulated_only_row(quantity: str, samples) -> dict:
    """A row with an estimate and no closed form (nothing to check: ``passed`` is None)."""
    samples = np.asarray(samples, dtype=np.float64)
    mean, error = float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(samples.size))
    return {"quantity": quantity, "closed_form": None, "estimate": mean,
            "ci_low": mean - 1.96 * error, "ci_high": mean + 1.96 * error, "z": None,
            "p_value": None, "passed": None,
            "note": "simulated only (exact round law too large)"}


#: Points of a plotted running mean (log-spaced over the runs; the last run always included).
RUNNING_POINTS = 300


def running_mean_series(samples, sd: float, n_points: int = RUNNING_POINTS) -> dict:
    r"""The running mean of ``samples`` and its 95% band, at ~``n_points`` log-spaced runs.

    Parameters
    ----------
    samples : array_like
        One number per run, in run order.
    sd : float >= 0
        The exact standard deviation σ of one sample.
    n_points : int >= 2
        How many runs k to keep (log-spaced from 1 to n, rounded, duplicates dropped).

    Returns
    -------
    dict
        ``runs`` (k), ``running_mean`` (x̄ₖ) and ``band_half_width`` (1.96 σ/√k): what the
        figures plot and the JSON stores.

    Notes
    -----
    The band is the 95% confidence interval of the running mean x̄ₖ around the exact mean
    under the central limit theorem, x̄ₖ ± 1.96 σ/√k — not a band of single runs.  A log
    axis shows k = 1 … n evenly, so log-spaced points lose nothing visible while keeping a
    figure (and its PDF) small however many runs were simulated.

    Examples
    --------
    >>> from sim.experiments.common import running_mean_series
    >>> series = running_mean_series([1, 3, 2, 2], sd=1.0, n_points=3)
    >>> series["runs"], series["running_mean"]
    ([1, 2, 4], [1.0, 2.0, 2.0])
    """
    samples = np.asarray(samples, dtype=np.float64)
    means = np.cumsum(samples) / np.arange(1, samples.size + 1)
    runs = np.unique(np.rint(np.geomspace(1, samples.size, n_points)).astype(np.int64))
    return {"runs": runs.tolist(), "running_mean": means[runs - 1].tolist(),
            "band_half_width": (1.96 * sd / np.sqrt(runs)).tolist()}


def running_rejections(draft, target, algorithm, label, theory, settings, rng, printed=None):
    """Simulated N_rej against ``theory``; ``printed`` is the value the paper prints, if any."""
    pmf = rejection_pmf(draft, target, algorithm)
    mean, variance = pmf_moments(pmf)
    samples = simulate(draft, target, algorithm, n_trials=settings.trials, rng=rng,
                       client=settings.client).rejections
    row = mean_row(f"E[N_rej] {label}", samples, theory, variance)
    row["dp"] = mean
    drafts = getattr(algorithm, "n_drafts", 1)  # drafts per round: 1 unless multi-draft
    series = {"label": label, "n_drafts": drafts, "sd": variance ** 0.5, "theory": theory,
              **running_mean_series(samples, variance ** 0.5)}
    if printed is not None:
        row["printed"] = series["printed"] = printed
    return row, series

