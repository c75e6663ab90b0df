"""The figures of ``specdec reproduce`` under one roof: each experiment's figure function by name.

Each figure is defined beside its experiment (:mod:`sim.experiments.speculative`,
:mod:`~sim.experiments.batch`, :mod:`~sim.experiments.lossy`, …) and drawn from that
experiment's data; this module gathers them, with :func:`save` and the registry's
:data:`FIGURES` (experiment name → (figure function, title)), for code that draws or checks
figures without running experiments.
"""

from sim.experiments.batch import batch_improvement, rejections_vs_drafts, running_panels
from sim.experiments.batch import fig5_panels as fig5
from sim.experiments.batch import gap_curves as multidraft_gap
from sim.experiments.block import block_panels as block_verification
from sim.experiments.lossy import pareto, tradeoff_chains
from sim.experiments.lossy_zoo import zoo_front as lossy_zoo
from sim.experiments.multidraft import multidraft_zoo
from sim.experiments.plotting import running_means, save
from sim.experiments.runner import FIGURES
from sim.experiments.speculative import pmf_bars as pmf
from sim.experiments.speculative import walltime_panels as walltime
from sim.experiments.stopping import stopping_panels as adaptive_stopping
from sim.experiments.windows import window_policies

__all__ = ["FIGURES", "adaptive_stopping", "batch_improvement", "block_verification", "fig5",
           "lossy_zoo", "multidraft_gap", "multidraft_zoo", "pareto", "pmf",
           "rejections_vs_drafts", "running_means", "running_panels", "save", "tradeoff_chains",
           "walltime", "window_policies"]
