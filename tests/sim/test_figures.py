"""Figures stay small and readable: thinned series, colours per M, limits off the main axes."""

import matplotlib
import numpy as np

from sim.experiments import figures
from sim.experiments.common import running_mean_series

matplotlib.use("Agg")


def _series(n_drafts, n_runs=200_000, theory=16.4, seed=0):
    samples = np.random.default_rng(seed).poisson(theory, n_runs)
    label = "SD (Theorem 1)" if n_drafts == 1 else f"batch M={n_drafts} (Theorem 3)"
    return {"label": label, "n_drafts": n_drafts, "sd": theory ** 0.5, "theory": theory,
            **running_mean_series(samples, theory ** 0.5)}


def _drafts_data():
    rows = [{"verifier": verifier, "n_drafts": m, "theory": 16.4 - m - shift,
             "simulated": 16.4 - m - shift, "standard_error": 0.02}
            for verifier, shift in (("paper", 0.0), ("trie", 0.3)) for m in range(1, 6)]
    return {"rows": rows, "limits": {"paper": 12.1, "trie": 0.0}}


def _line_colors(axes):
    return {line.get_label().split(":")[0]: line.get_color() for line in axes.get_lines()}


def test_running_means_are_thinned_so_pdfs_stay_small(tmp_path):
    series = [_series(m, seed=m) for m in (1, 2, 4, 5)]
    assert all(len(s["runs"]) <= figures_points() for s in series)
    figure = figures.fig5({"running": {"series": series}, "drafts": _drafts_data()}, "Fig. 5")
    figures.save(figure, tmp_path, "fig5")
    assert (tmp_path / "fig5.pdf").stat().st_size < 300_000  # 200k points each were 7.7 MB


def figures_points():
    from sim.experiments.common import RUNNING_POINTS

    return RUNNING_POINTS


def test_each_number_of_drafts_has_one_colour_in_every_figure():
    batch = [_series(4, 1000), _series(5, 1000)]
    alone = figures.running_means({"series": batch}, "Fig. 2(b)")
    in_fig5 = figures.fig5({"running": {"series": [_series(1, 1000), _series(2, 1000), *batch]},
                            "drafts": _drafts_data()}, "Fig. 5")
    colors_alone = _line_colors(alone.axes[0])
    colors_fig5 = _line_colors(in_fig5.axes[1])
    for label in ("batch M=4 (Theorem 3)", "batch M=5 (Theorem 3)"):
        assert colors_alone[label] == colors_fig5[label]
    assert colors_fig5["batch M=4 (Theorem 3)"] != colors_fig5["batch M=5 (Theorem 3)"]


def test_limits_do_not_squash_the_rejections_vs_drafts_panel():
    figure = figures.rejections_vs_drafts(_drafts_data(), "Fig. 2(c)")
    main = figure.axes[0]
    low, high = main.get_ylim()
    assert low > 10 and high < 17  # zoomed on the curves and their error bars
    inset = main.child_axes[0]
    assert inset.get_ylim()[0] < 0 < 12.1 < inset.get_ylim()[1]  # the limits, in the inset
