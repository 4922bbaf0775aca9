"""arml.viz.charts: plots of numbers (curves, scores, sweeps, bars, scatters) and their bad input."""

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PathCollection
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
    # ... and says why, once for the panel rather than under every point
    assert [t.get_text() for t in one_seed.axes[0].texts] == ["50.0", "51.0", "single runs: no error bars"]


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def _scatter_offsets(ax):
    (dots,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    return dots.get_offsets()


def test_score_plot_points_reference_lines_and_single_runs():
    ours = {"CE": (50, 1), "KL": (52, 2), "L_st": 55.0}
    seeds = {"CE": [49, 50, 51], "KL": [50, None, 54], "L_st": [55.0]}
    refs = {"label only": 40.0, "official": 60.0}
    fig = score_plot(ours, {"CE": (67.97, 0.28)}, points=seeds, reference_lines=refs)
    ax, paper_ax = fig.axes
    xy = _scatter_offsets(ax)
    assert len(xy) == 6  # None skipped; one collection for all dots
    assert sorted(xy[:, 1]) == [49, 50, 50, 51, 54, 55]
    # left of each mean (x = 0, 1, 2) by 0.2, spread evenly over 0.12: deterministic, clear of the value text
    assert np.allclose(xy[:, 0], [-0.26, -0.2, -0.14, 0.74, 0.86, 1.8])
    assert np.array_equal(xy, _scatter_offsets(score_plot(ours, points=seeds).axes[0]))  # deterministic
    assert sum(isinstance(c, LineCollection) for c in ax.collections) == 1  # the two error bars
    ref_lines = [line for line in ax.lines if line.get_label().startswith(("label only", "official"))]
    assert [line.get_label() for line in ref_lines] == ["label only (40.0)", "official (60.0)"]
    assert ref_lines[0].get_color() != ref_lines[1].get_color()
    assert ref_lines[0].get_linestyle() != ref_lines[1].get_linestyle()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "per seed",
        "label only (40.0)",
        "official (60.0)",
    ]
    low, high = ax.get_ylim()
    assert low < 40 and high > 60  # the reference lines are inside the zoomed axis
    assert _texts(ax) == ["50.0", "52.0", "55.0", "single run"]  # L_st: one seed, no bar
    # the paper panel gets neither dots, lines nor labels
    assert not [line for line in paper_ax.lines if "(" in line.get_label()]  # no reference lines
    assert paper_ax.get_legend() is None and _texts(paper_ax) == ["68.0"]
    assert not [c for c in paper_ax.collections if isinstance(c, PathCollection)]
    with pytest.raises(ValueError, match=r"points for rows not in ours: \['XX'\]"):
        score_plot(ours, points={"XX": [1.0]})
    with pytest.raises(ValueError, match="'bad' needs a finite value"):
        score_plot(ours, reference_lines={"bad": float("nan")})


def test_score_plot_single_run_follows_the_points():
    # std 0 with three identical seeds is not a single run; one point is, whatever the std says
    fig = score_plot({"a": (50, 0), "b": (51, 0.5)}, points={"a": [50, 50, 50], "b": [51]})
    assert _texts(fig.axes[0]) == ["50.0", "51.0", "single run"]
    assert fig.axes[0].texts[-1].xy == (1, 51)


def test_sweep_plot_points_reference_lines_and_single_runs():
    labels = ["1", "2", "∞"]
    pts = [[49, 51], [52], []]
    fig = sweep_plot(
        labels,
        [(50, 1), 52, (53, 0.5)],
        baseline=(48, 0.5),
        paper=[1, 2, 3],
        points=pts,
        reference_lines={"floor": 40.0},
    )
    ax, paper_ax = fig.axes
    assert len(_scatter_offsets(ax)) == 3
    assert [line.get_label() for line in ax.lines if line.get_label() == "floor (40.0)"] == ["floor (40.0)"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ours", "N/A", "per seed", "floor (40.0)"]
    assert ax.get_ylim()[0] < 40
    assert _texts(ax) == ["single run"] and ax.texts[0].xy == (1, 52)
    assert sum(isinstance(c, LineCollection) for c in ax.collections) == 1  # bars for 1 and ∞ only
    assert not _texts(paper_ax) and not [c for c in paper_ax.collections if isinstance(c, PathCollection)]
    all_single = sweep_plot(labels, [50, 51, 52])
    assert _texts(all_single.axes[0]) == ["single runs: no error bars"]
    with pytest.raises(ValueError, match="points: 2 groups for 3 labels"):
        sweep_plot(labels, [1, 2, 3], points=[[1], [2]])


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


def test_curves_plot_names_a_curve_hidden_under_an_earlier_one():
    fig = curves_plot([1, 2], {"a": [1, 2], "b": [1, 2], "c": [2, 1]}, "x", "y")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b (= a)", "c"]
    styles = {(line.get_marker(), line.get_linestyle()) for line in fig.axes[0].get_lines()}
    assert len(styles) == 3  # each curve its own marker and line style, so none hides another
