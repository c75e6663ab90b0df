"""The README's code runs as printed: the custom-verifier example is exact and gets caught."""

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from theory.verification import InvalidVerification

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_custom_verifier_example_is_exact_and_caught_as_biased():
    namespace: dict = {}
    exec(compile(_section_code("## Test your own verifier"), "README", "exec"), namespace)
    from sim.models import bernoulli_pair

    draft, target = bernoulli_pair(Fraction(1, 3), Fraction(1, 2), horizon=2)
    accept, law = namespace["MyVerifier"]().verification(draft.probs[0], target.probs[0])
    assert all(isinstance(v, Fraction) for v in np.ravel(accept)) \
        and all(isinstance(v, Fraction) for v in np.ravel(law))  # exact, not floats
    with pytest.raises(AssertionError):  # the exact test catches the biased verifier
        namespace["test_my_verifier"]()


def test_the_old_readme_verifier_is_refused():
    """0.9 · min(1, q/p) with the residual rejects where the residual is empty (p = q)."""
    from dataclasses import dataclass

    from sim.models import bernoulli_pair
    from theory import Speculative, expected_rejections
    from theory.onestep import acceptance_probability, residual_distribution

    @dataclass(frozen=True)
    class Old(Speculative):
        def verification(self, p, q):
            return 0.9 * acceptance_probability(p, q), residual_distribution(p, q)

    draft, target = bernoulli_pair(0.5, 0.5, horizon=2)
    with pytest.raises(InvalidVerification, match=r"rejection law sums to 0\.0 "):
        expected_rejections(draft, target, Old())
