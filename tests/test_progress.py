"""What a fit shows while it runs: Keras' verbose levels, the bar only on a terminal."""
from __future__ import annotations

import io
import warnings

import pytest

import nnx
from nnx import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def moons():
    return nnx.datasets.moons(200, 0.2, 0)


def _fit(moons, verbose, **kwargs):
    with nnx.use_backend("numpy"):
        return nnx.MLP([2, 3, 2]).fit(*moons, passes=300, log_every=100, verbose=verbose, **kwargs)


def test_verbose_2_prints_a_line_per_logging_point(moons, capsys):
    _fit(moons, 2)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"Loss after pass {u}" for u in (0, 100, 200, 300)]


def test_verbose_2_adds_the_validation_figures(moons, capsys):
    _fit(moons, 2, validation_data=nnx.datasets.moons(50, 0.2, 1))
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("Loss after pass 300: ") and ", val_loss " in last and ", val_accuracy " in last


def test_the_bar_needs_a_terminal(moons, capsys, monkeypatch):
    monkeypatch.setattr(progress, "BAR_DELAY_S", 0)
    _fit(moons, 1)  # pytest's captured stderr is not a terminal
    assert capsys.readouterr().err == ""


def test_the_bar_shows_passes_loss_and_rate_on_a_terminal(moons, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr(progress, "BAR_DELAY_S", 0)
    _fit(moons, 1)
    shown = terminal.getvalue()
    assert "300/300" in shown and "loss=" in shown and "pass/s" in shown


@pytest.mark.parametrize("verbose", [0, False])
def test_silent_fits_print_nothing(moons, capsys, monkeypatch, verbose):
    monkeypatch.setattr("sys.stderr", _Terminal())
    _fit(moons, verbose)
    assert capsys.readouterr().out == ""


def test_true_keeps_its_old_meaning(moons, capsys):
    _fit(moons, True)
    assert capsys.readouterr().out.startswith("Loss after pass 0: ")


def test_an_uncompiled_optimiser_is_announced_once(moons):
    class Custom(nnx.optim.SGD):
        """A user's variant: no backend compiles it, the reference loop runs it."""

    with nnx.use_backend("numba") if nnx.available_backends()["numba"] is None else nnx.use_backend("numpy") as b:
        if b.name == "numpy":
            pytest.skip("the NumPy backend's loop is the reference loop")
        with pytest.warns(nnx.PerformanceWarning, match="Custom"):
            nnx.MLP([2, 3, 2]).fit(*moons, passes=3, optimizer=Custom(0.1), verbose=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            nnx.MLP([2, 3, 2]).fit(*moons, passes=3, optimizer=Custom(0.1), verbose=0)
