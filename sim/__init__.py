"""specdec-theory simulation: model generators, engines, statistics, experiments.

The public entry point is :func:`simulate` (the compiled CPU engine), returning a
:class:`SimResult`.  The subpackages group sim by concern (docs/architecture.md):
:mod:`sim.engine` (randomness, sampling tables, compiled kernels, the reference engine and exact
enumerator, one module per algorithm family), :mod:`sim.conformance` (the harness for
third-party verifiers and the adapters to real packages), :mod:`sim.experiments` (``specdec
reproduce``: one module per experiment with its figure, and the report runner); the top-level
modules are :mod:`sim.models` (model generators), :mod:`sim.stats` (the statistical checks),
:mod:`sim.strategies` (hypothesis strategies) and :mod:`sim.cli`.
"""

from sim.engine import SimCounts, SimResult, simulate, simulate_counts

__all__ = ["SimCounts", "SimResult", "simulate", "simulate_counts"]
