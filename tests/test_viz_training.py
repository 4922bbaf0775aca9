"""arml.viz.training: the convergence and vote figures of notebook 06."""

import numpy as np
from matplotlib.figure import Figure

from arml.viz import convergence_figure, vote_figure


def test_convergence_figure_draws_seeds_means_and_reference_lines():
    val = {"+ARS": np.array([[0.2, 0.5, 0.6], [0.3, 0.4, 0.6]])}
    memo = {"+ARS": (np.array([[0.3, 0.6, 0.8]]), np.array([[0.3, 0.5, 0.55]]))}
    fig = convergence_figure(val, memo, {"floor": 0.4, "pseudo masks (train)": 0.5, "fully supervised": None})
    assert isinstance(fig, Figure)
    left, right = fig.axes[:2]
    # two seed lines + the mean, then two reference lines (None is skipped)
    assert len(left.lines) == 3 + 2
    assert [t.get_text() for t in left.get_legend().get_texts()][-2:] == [
        "floor (40.0)",
        "pseudo masks (train) (50.0)",
    ]
    np.testing.assert_allclose(left.lines[2].get_ydata(), [25, 45, 60])  # mean over seeds, percent
    # right: fit and truth (one seed line + mean each) + the pseudo-mask line only
    assert len(right.lines) == 4 + 1


def test_vote_figure_has_base_rate_and_agreement_panels():
    fig = vote_figure(
        {"ARML (full)": np.array([[0.3, 0.35]])},
        0.17,
        {"three peers": np.array([[0.8, 0.9]]), "official": np.array([[0.95, 0.97]])},
    )
    left, right = fig.axes[:2]
    assert any("base rate 17.0" in t.get_text() for t in left.get_legend().get_texts())
    assert len(right.lines) == 4  # one seed line + mean per row
    no_truth = vote_figure({}, None, {})
    assert not no_truth.axes[0].lines


def test_noise_plot_one_panel_per_kind_with_seed_dots_and_natural_markers():
    from arml.viz import noise_plot

    records = [
        {"type": kind, "rate": rate, "method": method, "seed": seed, "miou": 0.5 - rate + 0.01 * seed}
        for kind in ("boundary", "swap")
        for rate in (0.1, 0.2)
        for method in ("CE", "SWV+SRM")
        for seed in (0, 1)
    ]
    natural = [{"type": "cam", "rate": 0.17, "method": "CE", "seed": 0, "miou": 0.4}]
    fig = noise_plot(records, natural, reference_lines={"fully supervised": 0.8})
    boundary, swap = fig.axes[:2]
    assert [boundary.get_title(), swap.get_title()] == ["corruption: boundary", "corruption: swap"]
    # per method: one mean line; plus the reference line
    assert len(boundary.lines) == 2 + 1
    np.testing.assert_allclose(
        boundary.lines[0].get_ydata(), [100 * (0.5 - 0.1 + 0.005), 100 * (0.5 - 0.2 + 0.005)]
    )
    # seed dots for both methods, and the open marker of the CAM masks for CE
    assert len(boundary.collections) == 2 + 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "CAM pseudo masks (open)" in labels and "SWV+SRM" in labels
