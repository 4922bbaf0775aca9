"""arml.viz.stage2: the SWV panel and the L_st relation heatmaps (their arrays: tests/test_loss_probes.py)."""

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from arml.loss_probes import relation_matrices, swv_weight_map
from arml.viz import relation_heatmaps, swv_panel


def test_swv_panel_figure():
    p1 = torch.tensor([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]])  # argmax 0 1 0
    p2 = torch.tensor([[[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]]])  # argmax 0 0 0
    w = swv_weight_map(p1, p2, torch.tensor([[0, 1, 255]]))
    mask = np.array([[0, 1, 4]])
    fig = swv_panel(torch.rand(3, 1, 3), mask, p1.argmax(0), p2.argmax(0), w, 2.0, title="synthetic")
    assert isinstance(fig, Figure) and fig._suptitle.get_text() == "synthetic"
    assert "agree 50%" in fig.axes[4].get_title()  # of the two counted pixels, one agrees
    assert [t.get_text() for t in fig.axes[5].get_yticklabels()] == ["disagree: 1/2", "agree: 2"]
    inf = swv_panel(torch.rand(3, 1, 3), mask, mask, mask, w, math.inf)
    assert [t.get_text() for t in inf.axes[5].get_yticklabels()] == ["disagree: 0", "agree: ∞"]


def test_relation_heatmaps_figure():
    rel = relation_matrices(torch.randn(3, 2, 4, 4))
    fig = relation_heatmaps(rel, rel, anchor=2, title="t")
    assert isinstance(fig, Figure) and "(mean 0.000)" in fig.axes[2].get_title()
    with pytest.raises(ValueError, match="anchor must be in"):
        relation_heatmaps(rel, rel, anchor=3)
    with pytest.raises(ValueError, match="differ in shape"):
        relation_heatmaps(rel, relation_matrices(torch.randn(2, 2, 4, 4)))
