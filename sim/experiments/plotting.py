"""What the figures of ``specdec reproduce`` share: colours, panels, the finish, the saving.

Every figure puts the closed form and the simulated estimate (with its 95% band or error bars)
on the same axes.  A running mean x̄ₖ of k runs is drawn with the 95% confidence band of the
mean, x̄ₖ ± 1.96 σ/√k (exact σ), and its theory line, in the colour of its number of drafts
M (:func:`drafts_color`, the same in every figure).  Each experiment module draws its own
figure with these helpers; functions only plot — the numbers come from the experiments.
"""

from __future__ import annotations

import pathlib
import sys

import matplotlib

# Batch runs draw off-screen.  Inside a Jupyter kernel the notebook's backend (inline) stays:
# switching it to Agg there silently drops every plot of a notebook that imports the experiments.
if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from sim.experiments.common import atomic_output

__all__ = ["COLORS", "LEGEND_SIZE", "drafts_color", "label_axes", "new_figure", "running_axes",
           "running_means", "save"]

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
#: Legend font size of every panel.
LEGEND_SIZE = 8


def drafts_color(n_drafts: int) -> str:
    """The colour of M drafts, the same in every figure (M = 1, speculative decoding: C0)."""
    return COLORS[(int(n_drafts) - 1) % len(COLORS)]


def save(figure, directory: pathlib.Path, name: str) -> list[str]:
    """Write ``name``.png and ``name``.pdf into ``directory``; returns the file names."""
    files = []
    try:
        for suffix in ("png", "pdf"):  # atomically: a killed run never leaves half a figure
            path = directory / f"{name}.{suffix}"
            # no creation date in PDFs: the same data give the same bytes (content hashes)
            metadata = {"CreationDate": None} if suffix == "pdf" else None
            # our own file object: closed here whatever the writer does on a full disk
            with atomic_output(path) as temporary, open(temporary, "wb") as file:
                figure.savefig(file, dpi=130, bbox_inches="tight", format=suffix,
                               metadata=metadata)
            files.append(path.name)
    finally:
        plt.close(figure)
    return files


def new_figure(n_panels: int = 1, *, width: float | None = None, height: float = 4.2):
    """A figure with ``n_panels`` side by side; constrained layout keeps the suptitle clear."""
    width = width or (6.4 if n_panels == 1 else 5.6 * n_panels)
    figure, axes = plt.subplots(1, n_panels, figsize=(width, height), layout="constrained")
    return figure, axes


def label_axes(ax, xlabel, ylabel, title=None, legend_size=LEGEND_SIZE, **legend):
    """Axis labels, optional title and the legend: the finish every panel shares."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize=legend_size, **legend)


def _running_mean(ax, series, band_label: bool):
    """A running mean (thinned: :func:`sim.experiments.common.running_mean_series`), its 95%
    CI and the theory line, in the colour of its number of drafts."""
    color = drafts_color(series.get("n_drafts", 1))
    k, mean = np.asarray(series["runs"]), np.asarray(series["running_mean"])
    half = np.asarray(series["band_half_width"])
    label, theory, printed = series["label"], series["theory"], series.get("printed")
    ax.plot(k, mean, color=color, lw=1.2, label=f"{label}: simulated running mean")
    ax.fill_between(k, mean - half, mean + half, color=color, alpha=0.2, lw=0,
                    label="shaded: 95% CI of the running mean (exact σ)" if band_label else None)
    paper = "" if printed is None else f"; the paper prints {printed:g}"
    ax.axhline(theory, color=color, ls="--", lw=1, label=f"{label}: theory {theory:.2f}{paper}")


def running_axes(ax, all_series, title=None):
    """Running means of N_rej on a log axis of runs, the first series' band labelled."""
    for i, series in enumerate(all_series):
        _running_mean(ax, series, band_label=i == 0)
    ax.set_xscale("log")
    label_axes(ax, "number of runs", "average number of rejections", title)


def running_means(data, title):
    """The running means of ``data["series"]`` (Fig. 2(a), Fig. 2(b)) in one panel."""
    figure, ax = new_figure()
    running_axes(ax, data["series"], title)
    return figure
