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


def _windows_data(costs):
    series = {"cost": list(costs), "optimal": [2.0] * len(costs), "best_fixed": [1.9] * len(costs),
              "best_fixed_window": [3] * (len(costs) - 1) + [0],
              "leviathan": [1.9] * len(costs), "leviathan_window": [3] * len(costs),
              "alpha": 0.7}
    return {"chains": {"a chain": series}}


def test_windows_ticks_are_the_costs_and_gamma_labels_stay_inside():
    figure = figures.window_policies(_windows_data((0.02, 0.1, 0.5)), "windows")
    figure.canvas.draw()
    ax = figure.axes[0]
    # about one decade of log axis: matplotlib labels minor ticks too ("2×10⁻²3×10⁻²…")
    shown = [label.get_text() for label in ax.get_xticklabels(minor=True) if label.get_text()]
    assert shown == []
    assert [label.get_text() for label in ax.get_xticklabels()] == ["0.02", "0.1", "0.5"]
    box = ax.get_window_extent()
    for text in ax.texts:  # "γ=0" at the lowest point was clipped by the axis
        extent = text.get_window_extent()
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1, text.get_text()


def _zoo_chain(far_x):
    def point(scheme, x, y, **extra):
        return {"scheme": scheme, "rejection_probability": x * 0.1, "tv_loss": y * 0.1,
                "tv": 0.1, **extra}
    points = [point("opt", x, 1 - x) for x in (0.0, 0.5, 1.0)]
    points += [point("target", x, 1 - 0.6 * x) for x in (0.0, 0.5, 1.0)]
    points += [point("typical", 1.5, 1.2, threshold=0.09, alpha=0.3),
               point("typical_opt", 1.8, 0.2, threshold=0.09, alpha=0.3)]
    points += [point("top_k", x, x - 1) for x in (1.2, far_x)]
    points += [point("top_p", x, x - 1) for x in (1.1, 2.0)]
    return {"name": "a chain", "points": points}


def test_lossy_zoo_frames_the_line_and_names_the_far_truncated_points():
    figure = figures.lossy_zoo({"chains": [_zoo_chain(8.0)]}, "zoo")
    ax = figure.axes[0]
    assert ax.get_xlim()[1] < 3 and ax.get_ylim()[1] < 2  # not squeezed by the point at 8 × TV̄
    texts = " ".join(text.get_text() for text in ax.texts)
    assert "1 truncated-SD points off the axes" in texts and "(8.0, 7.0)" in texts
    assert "threshold 0.09, α = 0.3" in texts
    inside = figures.lossy_zoo({"chains": [_zoo_chain(1.6)]}, "zoo")
    assert "off the axes" not in " ".join(text.get_text() for text in inside.axes[0].texts)


def test_multidraft_alpha_star_is_drawn_under_the_optimal_verifier_and_legend_is_readable():
    curves = {v: [0.6, 0.8] for v in ("paper", "trie", "swor", "spectr", "greedy", "topk")}
    acceptance = {f"chain {i}": {**curves, "optimal": [0.7, 0.9], "alpha_star": [0.7, 0.9]}
                  for i in range(4)}
    rejections = {f"chain {i}": {v: [3.0, 2.0] for v in (*curves, "optimal")} for i in range(2)}
    figure = figures.multidraft_zoo({"m": [1, 2], "acceptance": acceptance,
                                     "rejections": rejections}, "multidraft")
    band, *verifiers = figure.axes[0].get_lines()
    optimal = next(line for line in verifiers if line.get_label() == "optimal")
    # same data, yet both visible: the α* band is wider than the line drawn on it
    assert band.get_linewidth() >= 3 * optimal.get_linewidth() and band.get_zorder() < 1
    (legend,) = figure.legends
    assert legend.get_texts()[0].get_fontsize() >= 8 and len(legend.get_texts()) == 8


def test_every_experiment_has_a_caption_and_the_report_prints_it(tmp_path):
    from sim.experiments.common import Outcome, Settings
    from sim.experiments.runner import REGISTRY, write_report

    assert all(len(experiment.caption) > 40 for experiment in REGISTRY.values())
    write_report(tmp_path, {"pmf": Outcome(), "gap": Outcome()}, Settings(), 0)
    report = (tmp_path / "report.md").read_text()
    for name in ("pmf", "gap"):
        assert f"*What to look for:* {REGISTRY[name].caption}" in report


def _legends_overlapping_axes(figure):
    """(legend, axes) pairs whose drawn boxes intersect: a legend over a panel's data area."""
    figure.canvas.draw()
    legends = list(figure.legends) + [ax.get_legend() for ax in figure.axes if ax.get_legend()]
    return [(legend, ax) for legend in legends for ax in figure.axes
            if legend.get_window_extent().overlaps(ax.get_window_extent())]


def _stopping_data():
    from sim.experiments.stopping import RULES

    cost = [0.02, 0.1, 0.5]
    exact = {rule: {"speedup": [2.2, 1.9, 1.1], "exact": True} for rule in RULES}
    simulated = {**exact, "optimal": {"speedup": [None] * 3, "exact": True},
                 "threshold": {"speedup": [2.4, 2.0, 1.2], "exact": False,
                               "speedup_interval": [[2.3, 2.5], [1.9, 2.1], [1.1, 1.3]]}}
    return {"panels": {"Fig. 2 (exact)": {"cost": cost, **exact},
                       "n-gram (simulated)": {"cost": cost, **simulated}}}


def test_the_stopping_legend_lies_outside_the_panels():
    """Inside the panels it covered curves; the check catches a legend drawn in a panel
    (control)."""
    import matplotlib.pyplot as plt

    from sim.experiments.stopping import RULES, stopping_panels

    figure = stopping_panels(_stopping_data(), "stopping")
    assert _legends_overlapping_axes(figure) == []
    (legend,) = figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels[:len(RULES)] == list(RULES.values()) and "autoregressive" in labels
    plt.close(figure)
    control, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="a curve")
    ax.legend()
    assert len(_legends_overlapping_axes(control)) == 1
    plt.close(control)
