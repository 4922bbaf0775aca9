"""Plots of notebooks 04–06 (arml.viz, stage-2 section): values they compute, figures they return, bad input."""

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from arml.losses import structure_loss, swv_loss
from arml.viz import (
    curves_plot,
    per_class_bars,
    prediction_grid,
    relation_heatmaps,
    relation_matrices,
    score_plot,
    sweep_plot,
    swv_panel,
    swv_weight_map,
)


def _votes():
    """Two 1×2×1×3 voters: agree on pixels 0 and 2, disagree on pixel 1; pixel 2 ignored."""
    p1 = torch.tensor([[[[1.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]]])
    p2 = torch.tensor([[[[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]]]])
    target = torch.tensor([[[0, 1, 255]]])
    return p1, p2, target


def test_swv_weight_map_values():
    p1, p2, target = _votes()
    assert swv_weight_map(p1, p2, omega=2.0).tolist() == [[[2.0, 0.5, 2.0]]]
    w = swv_weight_map(p1, p2, target, omega=4.0)
    assert w[0, 0, :2].tolist() == [4.0, 0.25] and math.isnan(w[0, 0, 2])
    assert swv_weight_map(p1[0], p2[0], omega=math.inf).tolist() == [[1.0, 0.0, 1.0]]


def test_swv_weight_map_reproduces_swv_loss():
    torch.manual_seed(0)
    a, b, c = (torch.randn(2, 4, 6, 6) for _ in range(3))
    target = torch.randint(0, 4, (2, 6, 6))
    target[0, :2] = 255
    w = torch.from_numpy(np.nan_to_num(swv_weight_map(b, c, target, omega=3.0))).float()
    ce = torch.nn.functional.cross_entropy(a, target, ignore_index=255, reduction="none")
    expected = swv_loss(a, b, c, target, omega=3.0)
    assert torch.allclose((w * ce).sum() / w.sum(), expected)


def test_swv_weight_map_errors():
    p1, p2, target = _votes()
    with pytest.raises(ValueError, match=r"omega \(paper §2.3\) must be in \[1.0, inf\]"):
        swv_weight_map(p1, p2, omega=0.5)
    with pytest.raises(ValueError, match="share a C×H×W"):
        swv_weight_map(p1, p2[:, :1])
    with pytest.raises(ValueError, match="target shape"):
        swv_weight_map(p1, p2, target[:, :, :2])


def test_swv_panel_figure():
    p1, p2, target = _votes()
    w = swv_weight_map(p1, p2, target)[0]
    mask = np.array([[0, 1, 4]])
    fig = swv_panel(torch.rand(3, 1, 3), mask, p1[0].argmax(0), p2[0].argmax(0), w, 2.0, title="synthetic")
    assert isinstance(fig, Figure) and fig._suptitle.get_text() == "synthetic"
    assert "agree 50%" in fig.axes[4].get_title()  # of the two counted pixels, one agrees
    assert isinstance(swv_panel(torch.rand(3, 1, 3), mask, mask, mask, w, math.inf), Figure)


def test_relation_matrices_match_structure_loss():
    torch.manual_seed(1)
    a, b = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    target = torch.randint(0, 3, (4, 5, 5))
    target[:, 0] = 255
    (da, aa), (db, ab) = relation_matrices(a, target), relation_matrices(b, target)
    assert da.shape == (4, 4) and aa.shape == (4, 4, 4)
    assert np.allclose(np.diag(da), 0) and np.isclose(da[da > 0].mean(), 1.0)
    huber = torch.nn.functional.smooth_l1_loss
    expected = 30 * huber(torch.from_numpy(da), torch.from_numpy(db)) + 60 * huber(
        torch.from_numpy(aa), torch.from_numpy(ab)
    )
    assert torch.allclose(structure_loss(a, b, b, target), expected.float(), atol=1e-5)
    with pytest.raises(ValueError, match="B >= 2"):
        relation_matrices(a[:1])


def test_relation_heatmaps_figure():
    rel = relation_matrices(torch.randn(3, 2, 4, 4))
    fig = relation_heatmaps(rel, rel, anchor=2, title="t")
    assert isinstance(fig, Figure) and "(mean 0.000)" in fig.axes[2].get_title()
    with pytest.raises(ValueError, match="anchor must be in"):
        relation_heatmaps(rel, rel, anchor=3)
    with pytest.raises(ValueError, match="differ in shape"):
        relation_heatmaps(rel, relation_matrices(torch.randn(2, 2, 4, 4)))


def test_sweep_and_bar_plots():
    fig = sweep_plot(
        ["1", "2", "∞"], [(50, 1), 52, (None, None)], baseline=(49, 0.5), paper=[1, 2, 3], title="s"
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "ω"
    assert len(sweep_plot(["a"], [1.0]).axes) == 1
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        sweep_plot(["1", "2", "3"], [1, 2])
    fig = score_plot({"CE": (50, 1), "L_st": (55, 2)}, {"CE": (67.97, 0.28)}, title="b")
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["CE", "L_st"]
    assert [t.get_text() for t in fig.axes[0].texts] == ["50.0", "55.0"]
    low, high = fig.axes[0].get_ylim()
    assert low < 49 and high > 57  # the error bars fit inside the zoomed axis
    one_seed = score_plot({"CE": (50, 0), "KL": 51.0})
    assert not one_seed.axes[0].collections  # std 0 everywhere: no error bars drawn
    fig = per_class_bars(
        {"base": ([1, 2, None, 4], None), "full": ([2, 3, 4, 5], [0.1] * 4)}, ["a", "b", "c", "d"]
    )
    assert isinstance(fig, Figure)
    with pytest.raises(ValueError, match="3 values for 4 classes"):
        per_class_bars({"x": ([1, 2, 3], None)}, ["a", "b", "c", "d"])
    assert isinstance(curves_plot([1, 2], {"a": [0.1, 0.2]}, "ω", "loss", "c"), Figure)
    with pytest.raises(ValueError, match="has 1 values for 2"):
        curves_plot([1, 2], {"a": [0.1]}, "ω", "loss")


def test_prediction_grid():
    images = [torch.rand(3, 4, 4), np.zeros((4, 4, 3), dtype=np.uint8)]
    masks = [np.zeros((4, 4), dtype=np.uint8), np.full((4, 4), 4, dtype=np.uint8)]
    fig = prediction_grid(images, {"truth": masks, "model": masks}, "bcss", title="synthetic")
    assert [a.get_title() for a in fig.axes[:3]] == ["image", "truth", "model"]
    with pytest.raises(ValueError, match="column 'model' has 1 masks for 2 images"):
        prediction_grid(images, {"model": masks[:1]})
    with pytest.raises(ValueError, match="at least one image"):
        prediction_grid([], {})
