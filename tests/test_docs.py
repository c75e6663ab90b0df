"""Documentation contracts: numpydoc Parameters sections that match the signatures, and no
citation of files the repository does not ship."""

import inspect
import re
from pathlib import Path

import pytest

import sim.conformance
import sim.engine
import sim.stats
import theory
import theory.conformance

ROOT = Path(__file__).resolve().parents[1]
MODULES = (theory, theory.conformance, sim.stats, sim.engine, sim.conformance)
PUBLIC = sorted({(module.__name__, name) for module in MODULES for name in module.__all__
                 if inspect.isfunction(getattr(module, name))
                 and inspect.signature(getattr(module, name)).parameters})


@pytest.mark.parametrize(("module", "name"), PUBLIC)
def test_public_functions_document_every_parameter(module, name):
    function = getattr(__import__(module, fromlist=[name]), name)
    doc = inspect.getdoc(function) or ""
    assert "\nParameters\n----------\n" in doc, f"{module}.{name} has no Parameters section"
    section = doc.split("\nParameters\n----------\n", 1)[1]
    section = re.split(r"\n\n[A-Z][a-z]+\n-{3,}\n", section, maxsplit=1)[0]
    documented = set()
    for line in section.splitlines():
        if line and not line.startswith(" "):
            documented.update(part.strip() for part in line.split(":")[0].split(","))
    wanted = {parameter for parameter in inspect.signature(function).parameters}
    assert wanted <= documented, f"{module}.{name}: undocumented {wanted - documented}"


def test_docs_cite_only_files_the_repository_ships():
    cited = set()
    for path in [*ROOT.glob("theory/**/*.py"), *ROOT.glob("sim/**/*.py"),
                 *ROOT.glob("gpu_kernels/**/*.py"),
                 ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        assert "DESIGN" not in text, f"{path.name} cites a DESIGN file the package does not ship"
        cited.update(re.findall(r"docs/[\w/.-]+\.md", text))
    assert cited, "the docstrings cite docs/architecture.md"
    for name in cited:
        assert (ROOT / name).is_file(), name


def test_library_docstrings_cite_features_by_name_not_tracker_issues():
    """A reader of the package cannot look up "issue #14": cite the feature instead."""
    import pathlib
    import re

    root = pathlib.Path(__file__).parents[1]
    citing = [f"{path.relative_to(root)}:{number}"
              for package in ("theory", "sim", "gpu_kernels")
              for path in sorted((root / package).rglob("*.py"))
              for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
              if re.search(r"\bissue #\d", line)]
    assert citing == []
