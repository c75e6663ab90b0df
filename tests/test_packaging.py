"""Packaging: optional extras fail with a message naming the extra; the core never needs them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=ROOT, timeout=300)


def test_core_imports_without_hypothesis_and_strategies_name_the_extra():
    done = _python(
        "import sys; sys.modules['hypothesis'] = None\n"
        "import theory, sim, sim.reference, sim.cli, sim.stats, gpu_kernels\n"
        "try:\n"
        "    import sim.strategies\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n")
    assert done.returncode == 0, done.stderr
    assert "pip install -e '.[hypothesis]'" in done.stdout


def test_torch_engine_without_torch_names_the_extra(monkeypatch):
    from gpu_kernels import simulate as simulate_torch
    from sim.models import fig2_pair
    from theory import Speculative

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e '\.\[torch\]'"):
        simulate_torch(*fig2_pair(3), Speculative(), n_trials=5, rng=0)


def test_project_metadata_raises_no_setuptools_deprecation():
    pytest.importorskip("setuptools")
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distribution = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert distribution.metadata.name == "specdec-theory"
    assert "hypothesis" not in " ".join(distribution.install_requires)
