"""arml.viz.charts: plots of numbers (curves, scores, sweeps, bars, scatters) and their bad input."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from arml.viz import curves_plot, per_class_bars, scatter_plot, score_plot, sweep_plot


def test_curves_plot():
    fig = curves_plot([1, 2], {"a": [0.1, 0.2], "b": [0.3, 0.0]}, "ω", "loss", "c")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]
    assert fig.axes[0].get_title() == "c"
    with pytest.raises(ValueError, match="has 1 values for 2"):
        curves_plot([1, 2], {"a": [0.1]}, "ω", "loss")


def test_sweep_plot():
    fig = sweep_plot(
        ["1", "2", "∞"], [(50, 1), 52, (None, None)], baseline=(49, 0.5), paper=[1, 2, 3], title="s"
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "ω"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2", "∞"]
    assert len(sweep_plot(["a"], [1.0]).axes) == 1
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        sweep_plot(["1", "2", "3"], [1, 2])


def test_score_plot_zooms_on_the_values():
    fig = score_plot({"CE": (50, 1), "L_st": (55, 2)}, {"CE": (67.97, 0.28)}, title="b")
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["CE", "L_st"]
    assert [t.get_text() for t in fig.axes[0].texts] == ["50.0", "55.0"]
    low, high = fig.axes[0].get_ylim()
    assert low < 49 and high > 57  # the error bars fit inside the zoomed axis
    one_seed = score_plot({"CE": (50, 0), "KL": 51.0})
    assert not one_seed.axes[0].collections  # std 0 everywhere: no error bars drawn


def test_per_class_bars():
    fig = per_class_bars(
        {"base": ([1, 2, None, 4], None), "full": ([2, 3, 4, 5], [0.1] * 4)}, ["a", "b", "c", "d"]
    )
    assert len(fig.axes[0].patches) == 8  # 4 classes × 2 rows
    with pytest.raises(ValueError, match="3 values for 4 classes"):
        per_class_bars({"x": ([1, 2, 3], None)}, ["a", "b", "c", "d"])


def test_scatter_plot_reports_rank_correlation():
    x = np.arange(10.0)
    fig = scatter_plot({"down": (x, -x), "up": (x, x**2)}, "response", "gate")
    assert [ax.get_title() for ax in fig.axes] == ["down (Spearman ρ = -1.00)", "up (Spearman ρ = 1.00)"]
    with pytest.raises(ValueError, match="'bad': x and y differ in size"):
        scatter_plot({"bad": (x, x[:3])}, "x", "y")
    with pytest.raises(ValueError, match="at least one series"):
        scatter_plot({}, "x", "y")
