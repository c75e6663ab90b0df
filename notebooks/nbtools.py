"""Helpers shared by the notebooks (not part of the package).

:func:`interact` is ``ipywidgets.interact`` when ipywidgets is installed (``make lab``
installs it with the ``notebooks`` extra); otherwise it calls the function once with its
default arguments, so every notebook also runs top to bottom without widgets (as the tests
run them).
"""

try:
    from ipywidgets import interact
except ModuleNotFoundError:

    def interact(function, **sliders):
        """Without ipywidgets: run ``function`` once with its defaults (the sliders' start)."""
        return function()


__all__ = ["interact"]
