"""arml.loss_probes: SWV's weights (Eq. 4) and L_st's relations (Eq. 6–7) agree with the losses."""

import doctest
import math

import numpy as np
import pytest
import torch

import arml.loss_probes
from arml.loss_probes import relation_matrices, swv_weight_map, voter_agreement
from arml.losses import structure_loss, swv_loss


def _votes():
    """Two 1×2×1×3 voters: agree on pixels 0 and 2, disagree on pixel 1; pixel 2 ignored."""
    p1 = torch.tensor([[[[1.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]]])
    p2 = torch.tensor([[[[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]]]])
    target = torch.tensor([[[0, 1, 255]]])
    return p1, p2, target


def test_doctests():
    assert doctest.testmod(arml.loss_probes).failed == 0


def test_swv_weight_map_values():
    p1, p2, target = _votes()
    assert swv_weight_map(p1, p2, omega=2.0).tolist() == [[[2.0, 0.5, 2.0]]]
    w = swv_weight_map(p1, p2, target, omega=4.0)
    assert w[0, 0, :2].tolist() == [4.0, 0.25] and math.isnan(w[0, 0, 2])
    assert swv_weight_map(p1[0], p2[0], omega=math.inf).tolist() == [[1.0, 0.0, 1.0]]


@pytest.mark.parametrize("omega", [1.0, 3.0, math.inf])
def test_swv_weight_map_reproduces_swv_loss(omega):
    torch.manual_seed(0)
    a, b, c = (torch.randn(2, 4, 6, 6) for _ in range(3))
    target = torch.randint(0, 4, (2, 6, 6))
    target[0, :2] = 255
    w = torch.from_numpy(np.nan_to_num(swv_weight_map(b, c, target, omega=omega))).float()
    ce = torch.nn.functional.cross_entropy(a, target, ignore_index=255, reduction="none")
    expected = swv_loss(a, b, c, target, omega=omega)
    assert torch.allclose((w * ce).sum() / w.sum(), expected)


def test_swv_weight_map_errors():
    p1, p2, target = _votes()
    with pytest.raises(ValueError, match=r"omega \(paper §2.3\) must be in \[1.0, inf\]"):
        swv_weight_map(p1, p2, omega=0.5)
    with pytest.raises(ValueError, match="share a C×H×W"):
        swv_weight_map(p1, p2[:, :1])
    with pytest.raises(ValueError, match="target shape"):
        swv_weight_map(p1, p2, target[:, :, :2])


def test_voter_agreement_by_hand():
    b, c = np.array([[0, 1, 2]]), np.array([[0, 1, 3]])
    assert voter_agreement(b, c) == pytest.approx(2 / 3)
    assert voter_agreement(torch.from_numpy(b), c, np.array([[False, False, True]])) == 0.0
    assert math.isnan(voter_agreement(b, c, np.zeros((1, 3), bool)))
    p1, p2, target = _votes()  # the weights' NaN marks the ignored pixel
    valid = np.isfinite(swv_weight_map(p1, p2, target))
    assert voter_agreement(p1.argmax(1), p2.argmax(1), valid) == 0.5
    with pytest.raises(ValueError, match="valid shape"):
        voter_agreement(b, c, np.ones(3, bool))


def test_relation_matrices_by_hand():
    logits = torch.tensor([0.0, 3.0, 4.0, 0.0]).view(2, 2, 1, 1).expand(2, 2, 1, 2)  # rows (0, 3), (4, 0)
    dist, ang = relation_matrices(torch.stack([logits[0], logits[1], logits[0] * 0]))
    # images: e0 = (0,0,3,3), e1 = (4,4,0,0), e2 = 0; |e0−e1| = √50, |e0| = √18, |e1| = √32
    d = np.array([50, 18, 32]) ** 0.5
    assert dist[0, 1] == pytest.approx(d[0] / d.mean(), rel=1e-5)
    assert ang[2, 0, 1] == pytest.approx(0.0, abs=1e-6)  # e0 ⟂ e1 seen from the origin e2
    assert np.diag(ang[0]).tolist() == [0.0, 1.0, 1.0]  # cos of a vector with itself; 0 at the anchor


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
