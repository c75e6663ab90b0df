"""``specdec reproduce``: every figure of the paper and ours, and a theory-vs-simulation report.

Each experiment (one module of :mod:`sim.experiments` per algorithm family) simulates, checks
every simulated statistic against its closed form with :mod:`sim.stats` (level
:data:`sim.stats.DEFAULT_ALPHA` per check, fixed seeds, no retries), and returns check rows
plus the data of its figure.  :data:`REGISTRY` lists them in report order, one line each;
:func:`reproduce` runs them all (or those named), each on its own stream spawned from the
seed in registry order, and writes

* ``figures/<name>.png`` and ``.pdf``,
* ``data/<name>.json`` — every number, including every plotted series (running means
  thinned to log-spaced points), with the seed, the configuration, package versions and the
  git commit (written atomically),
* ``report.md`` — a summary (checks per experiment, which were reused by a resumed run), the
  figures, then one table row per check (quantity, closed form, simulated estimate with its
  95% interval, z or χ², p, verdict),

and returns the number of failed checks (the command's exit status is non-zero if any fail).
One writer per output folder (a lock); a resumed run reuses the intact results of a previous
one (content and figure hashes, same seed, sizes and record format).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

from sim.experiments import (
    batch,
    block,
    lossy,
    lossy_zoo,
    multidraft,
    speculative,
    stopping,
    trees,
    windows,
)
from sim.experiments.common import Outcome, Settings, write_text_atomically
from sim.experiments.plotting import save
from sim.stats import DEFAULT_ALPHA

__all__ = ["EXPERIMENTS", "FIGURES", "REGISTRY", "Settings", "reproduce"]

#: Version of the experiments' definitions, stored in every data file: a resumed run recomputes
#: the files an older version wrote (version 2: Fig. 2 and Fig. 5 on the paper's instance;
#: version 3: running means stored as thinned series, chi-square statistics, the git commit).
RECORD_FORMAT = 3


#: Every experiment, in report order, one registration line each.  The order is part of the
#: results: the i-th experiment draws from the i-th stream spawned from the seed.
REGISTRY = {experiment.name: experiment for experiment in (
    speculative.FIG2A,
    batch.FIG2B,
    batch.FIG2C,
    batch.FIG2_DIRICHLET,
    batch.FIG5,
    batch.FIG3,
    lossy.FIG4A,
    lossy.FIG4BC,
    speculative.PMF,
    speculative.WALLTIME,
    batch.GAP,
    windows.WINDOWS,
    lossy_zoo.LOSSY_ZOO,
    block.BLOCK,
    multidraft.MULTIDRAFT,
    stopping.STOPPING,
    trees.TREES,
)}
#: Experiment name → the function that runs it (the names ``--only`` accepts).
EXPERIMENTS = {name: experiment.run for name, experiment in REGISTRY.items()}
#: Experiment name → (the function that draws its figure, the figure's title).
FIGURES = {name: (experiment.draw, experiment.title) for name, experiment in REGISTRY.items()}


# ---------------------------------------------------------------------- the run
def versions() -> dict:
    import matplotlib
    import scipy
    import sympy

    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "sympy": sympy.__version__,
            "matplotlib": matplotlib.__version__}


def git_commit() -> dict:
    """The commit of the package's checkout, and whether it has uncommitted changes.

    ``{"commit": None, "dirty": None}`` outside a git checkout (e.g. an installed copy) or
    without git.
    """
    import subprocess

    here = pathlib.Path(__file__).resolve().parent

    def git(*arguments):
        return subprocess.run(["git", *arguments], cwd=here, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def write_json_atomically(path: pathlib.Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` through a temporary file and an atomic rename
    (:func:`sim.experiments.common.write_text_atomically`)."""
    write_text_atomically(path, json.dumps(payload, indent=1, default=float))


def _number(value, digits: int = 6) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and (abs(value) >= 1e4 or (0 < abs(value) < 1e-3)):
        return f"{value:.3e}"
    return f"{value:.{digits}g}"


INSTANCES = (
    "Fig. 2 and Fig. 5 (and the pmf, walltime, gap and Fig. 4(b) chain experiments) use "
    "`fig2_pair(instance=\"paper\")`, a reconstruction of the paper's chains (legacy "
    "`np.random.RandomState(10)`, draft then target drawn as `rand(T, 7, 7)` with every row "
    "divided by its sum, uniform prompt); the paper does not publish its code.  The column "
    "*paper prints* holds the value the paper prints, beside the one computed here.  "
    "`fig2_dirichlet` repeats Fig. 2(a, b) on the Dirichlet(1) stand-in "
    "(`fig2_pair(instance=\"dirichlet\")`) the package used before."
)


def write_report(out: pathlib.Path, results: dict, settings: Settings, seed: int,
                 reused=(), recomputed=None) -> int:
    """Write ``report.md``: a summary, the figures, then every check; returns the failures.

    ``reused`` names the experiments taken from a previous run in ``out`` (resume).
    """
    rows = [(name, row) for name, outcome in results.items() for row in outcome.rows]
    failed = sum(row["passed"] is False for _, row in rows)
    checked = sum(row["passed"] is not None for _, row in rows)
    reused = [name for name in results if name in set(reused)]
    lines = [
        "# specdec-theory: theory vs simulation",
        "",
        f"Seed {seed}; {'quick' if settings.quick else 'default'} sizes "
        f"({settings.trials:,} base trials). {checked} checks, each at false-positive level "
        f"{DEFAULT_ALPHA:g} (budget {checked * DEFAULT_ALPHA:.1e} for the whole report): "
        f"**{checked - failed} passed, {failed} failed**"
        + (f"; {len(rows) - checked} simulated-only rows (no closed form, marked —)."
           if checked < len(rows) else "."),
        "",
        ("Reused from a previous run in this folder (same seed and sizes, not recomputed): "
         + ", ".join(reused) + "." if reused else
         "Every experiment was computed in this run."),
        *(["", "Recomputed because the stored results could not be trusted: "
           + "; ".join(f"{name} ({why})" for name, why in recomputed.items()) + "."]
          if recomputed else []),
        "",
        "| experiment | checks | passed | this run |",
        "|---|---|---|---|",
    ]
    for name, outcome in results.items():
        passed = sum(row["passed"] is True for row in outcome.rows)
        checks = sum(row["passed"] is not None for row in outcome.rows)
        lines.append(f"| [{name}](#{name}) | {checks} | {passed} | "
                     f"{'reused' if name in reused else 'computed'} |")
    lines += ["", INSTANCES, ""]
    printed = [(name, row) for name, row in rows if row.get("printed") is not None]
    if printed:
        lines += ["| experiment | quantity | computed here | paper prints | difference |",
                  "|---|---|---|---|---|"]
        lines += [f"| {name} | {row['quantity']} | {row['closed_form']:.5f} | "
                  f"{row['printed']:g} | {row['closed_form'] - row['printed']:+.4f} |"
                  for name, row in printed]
        lines.append("")
    lines += ["## Figures", ""]
    for name in results:
        lines += [f"### {FIGURES[name][1]}", "", f'<a id="{name}"></a>', "",
                  f"![{name}](figures/{name}.png)", "",
                  f"*What to look for:* {REGISTRY[name].caption}", ""]
        markdown = results[name].data.get("markdown", [])  # an experiment's own tables
        lines += [markdown, ""] if isinstance(markdown, str) else markdown
    lines += [
        "## Every check",
        "",
        "*z* is the z statistic of a mean check, or Pearson's chi-square statistic of a "
        "goodness-of-fit check (its degrees of freedom in the closed-form column).",
        "",
        "| experiment | quantity | closed form | paper prints | simulated (95% CI) | z / χ² | p | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows:
        simulated = "—" if row["estimate"] is None else (
            f"{_number(row['estimate'])} ({_number(row['ci_low'])}, {_number(row['ci_high'])})")
        closed = _number(row["closed_form"]) if row["closed_form"] is not None else \
            row.get("note", "—")
        paper = "—" if row.get("printed") is None else f"{row['printed']:g}"
        verdict = "—" if row["passed"] is None else "pass" if row["passed"] else "**FAIL**"
        lines.append(f"| {name} | {row['quantity']} | {closed} | {paper} | {simulated} | "
                     f"{_number(row['z'], 3)} | {_number(row['p_value'], 3)} | {verdict} |")
    lines.append("")
    write_text_atomically(out / "report.md", "\n".join(lines))  # never a truncated report
    return failed


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _content_hash(checks, data) -> str:
    """SHA-256 of the checks and data of a record, as canonical JSON."""
    return _sha256(json.dumps({"checks": checks, "data": data}, sort_keys=True,
                              default=float).encode())


def package_version() -> str:
    """The installed version of specdec-theory, and the record format of the experiments."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("specdec-theory")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        installed = "unknown"
    return f"{installed}+records{RECORD_FORMAT}"


def _completed(out: pathlib.Path, name: str, seed: int, settings: Settings):
    """``(outcome, None)`` for an experiment a previous run finished with the same seed and
    sizes, intact; ``(None, reason)`` when a data file exists but cannot be trusted
    (unreadable, malformed, edited or damaged — its content hash does not match —, a figure
    missing or damaged, written by another version); ``(None, None)`` when there is none.

    An experiment is complete once its JSON exists (written atomically, after its figures).
    """
    path = out / "data" / f"{name}.json"
    if not path.exists():
        return None, None
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"unreadable data file ({type(error).__name__})"
    if not isinstance(record, dict) or not isinstance(record.get("checks"), list) \
            or not isinstance(record.get("data"), dict) \
            or not all(isinstance(row, dict) and "passed" in row for row in record["checks"]):
        return None, "malformed data file"
    if record.get("format") != RECORD_FORMAT or record.get("package") != package_version():
        return None, (f"written by another version ({record.get('package', 'unrecorded')}, "
                      f"this is {package_version()})")
    same_sizes = {k: v for k, v in record.get("settings", {}).items() if k != "dask_scheduler"} \
        == {k: v for k, v in settings.describe().items() if k != "dask_scheduler"}
    if record.get("seed") != seed or not same_sizes:
        return None, "another seed or other sizes"
    if record.get("content_sha256") != _content_hash(record["checks"], record["data"]):
        return None, "content hash mismatch (edited or damaged numbers)"
    figure_hashes = record.get("figure_sha256")
    if not isinstance(figure_hashes, dict) or set(figure_hashes) != {f"{name}.png",
                                                                     f"{name}.pdf"}:
        return None, "malformed data file (figure hashes)"
    for file, digest in figure_hashes.items():
        try:
            intact = _sha256((out / "figures" / file).read_bytes()) == digest
        except OSError:
            intact = False
        if not intact:
            return None, f"figure {file} missing or damaged"
    return Outcome(record["checks"], record["data"]), None


class OutputFolderBusy(OSError):
    """Another ``specdec reproduce`` holds the output folder's lock."""


class _FolderLock:
    """An exclusive, non-blocking lock on the output folder for the whole run: one writer per
    output folder.  The lock is held on an open descriptor of the folder itself
    (``fcntl.flock``), so deleting or replacing a file inside cannot release it; it dies with
    its process (even on SIGKILL).  ``out/.specdec.lock`` holds the holder's pid, for the
    message a refused run prints."""

    def __init__(self, out: pathlib.Path):
        self.path = out / ".specdec.lock"

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.folder = os.open(self.path.parent, os.O_RDONLY)  # held for the whole run
        try:
            fcntl.flock(self.folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.folder)
            try:
                holder = self.path.read_text().strip() or "unknown"
            except FileNotFoundError:  # deleted by hand: the lock holds regardless
                holder = "unknown"
            raise OutputFolderBusy(
                f"another specdec reproduce (pid {holder}) is writing into "
                f"{self.path.parent}; wait for it to finish or choose another --out") from None
        self.path.write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.folder, fcntl.LOCK_UN)
        os.close(self.folder)
        return False


def reproduce(out="results", *, quick: bool = False, seed: int = 0, only=None,
              progress: bool = True, client=None, resume: bool = True) -> int:
    """Run the experiments (all, or those named in ``only``); returns the number of failures.

    ``client`` (a ``dask.distributed.Client``) runs the simulations' chunks on a cluster; the
    results are identical to a single-process run with the same seed.

    With ``resume`` (default), experiments that a previous (e.g. interrupted) run into the same
    folder completed with the same seed and sizes are not run again; every experiment draws
    from its own stream spawned from the seed, so the final results are identical to an
    uninterrupted run.

    ``report.md`` lists every experiment whose completed data for this seed and these sizes
    is in the folder: those run now, and (marked reused) those ``only`` left out.

    Examples
    --------
    >>> import tempfile
    >>> from sim.experiments import reproduce
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     reproduce(folder, quick=True, only=["gap"], progress=False)
    0
    """
    if not str(out).strip():
        raise ValueError(f"out must name a folder; got {str(out)!r}")
    out = pathlib.Path(out)
    with _FolderLock(out):
        return _run(out, quick, seed, only, progress, client, resume)


def _run(out, quick, seed, only, progress, client, resume) -> int:
    settings = Settings.make(quick, client)
    names = list(EXPERIMENTS) if only is None else list(only)
    unknown = [name for name in names if name not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; choose from {list(EXPERIMENTS)}")
    streams = dict(zip(EXPERIMENTS, np.random.default_rng(seed).spawn(len(EXPERIMENTS)),
                       strict=True))
    iterator = names
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(names, desc="reproduce", unit="experiment")
    results, reused, recomputed = {}, [], {}
    for name in iterator:
        previous, reason = _completed(out, name, seed, settings) if resume else (None, None)
        if previous is not None:
            results[name] = previous
            reused.append(name)
            continue
        if reason is not None:
            recomputed[name] = reason
            print(f"reproduce: recomputing {name}: {reason}", file=sys.stderr)
        started = time.perf_counter()
        outcome = EXPERIMENTS[name](settings, streams[name])
        draw, title = FIGURES[name]
        files = save(draw(outcome.data, title), out / "figures", name)
        # round-trip through JSON first, so the hash covers exactly what is stored
        checks, data = json.loads(json.dumps([outcome.rows, outcome.data], default=float))
        write_json_atomically(out / "data" / f"{name}.json", {
            "experiment": name, "format": RECORD_FORMAT, "package": package_version(),
            "seed": seed, "settings": settings.describe(),
            "versions": versions(), "git": git_commit(),
            "seconds": time.perf_counter() - started,
            "content_sha256": _content_hash(checks, data),
            "figure_sha256": {file: _sha256((out / "figures" / file).read_bytes())
                              for file in files},
            "checks": checks, "figures": files, "data": data})
        results[name] = outcome
    # the report covers the whole folder: experiments not run now (--only) whose completed,
    # intact data for this seed and these sizes are on disk are listed as reused
    for name in EXPERIMENTS:
        if name not in results:
            previous, _ = _completed(out, name, seed, settings)
            if previous is not None:
                results[name] = previous
                reused.append(name)
    return write_report(out, results, settings, seed, reused, recomputed)
