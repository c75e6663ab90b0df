"""Torch engine of the simulators (CPU or CUDA, same API and same arrays as :func:`sim.simulate`).

torch is imported lazily, when a function here first runs, so the rest of the package works
without it.  ``python -m gpu_kernels.check`` runs the device checks and prints throughput.
"""

# Importing a family module registers its device step (register_run): one line per family.
from gpu_kernels import batch, block, stopping, token, tree  # noqa: F401
from gpu_kernels.engine import default_device, philox_pair, simulate

__all__ = ["default_device", "philox_pair", "simulate"]
