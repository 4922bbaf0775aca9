"""Hand-checkable tests for arml.losses (Eq. 4–9)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from arml import losses

IGNORE = 255


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three 3×4×3×3 logits (B = 3 so relations are not degenerate) and a target with two ignored pixels."""
    target = torch.randint(0, 4, (3, 3, 3), generator=torch.Generator().manual_seed(3))
    target[0, 0, 0] = IGNORE
    target[1, 2, 1] = IGNORE
    return _rand(3, 4, 3, 3, seed=0), _rand(3, 4, 3, 3, seed=1), _rand(3, 4, 3, 3, seed=2), target


@pytest.fixture
def tiny() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1×2×1×2 logits; peers agree on pixel 0 (class 0), disagree on pixel 1. Returns per-pixel CE too."""
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])
    peer1 = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]])  # argmax 0, 0
    peer2 = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # argmax 0, 1
    target = torch.tensor([[[0, 0]]])
    ce = torch.tensor([math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(1.0))])
    return logits, peer1, peer2, target, ce


@pytest.mark.parametrize("normalize", ["weights", "pixels"])
def test_swv_omega_one_is_cross_entropy(batch, normalize):
    logits, p1, p2, target = batch
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE)
    got = losses.swv_loss(logits, p1, p2, target, omega=1.0, normalize=normalize)
    torch.testing.assert_close(got, expected)


def test_swv_omega_two_by_hand(tiny):
    logits, p1, p2, target, ce = tiny
    by_weights = (2 * ce[0] + 0.5 * ce[1]) / 2.5
    by_pixels = (2 * ce[0] + 0.5 * ce[1]) / 2
    torch.testing.assert_close(losses.swv_loss(logits, p1, p2, target, omega=2.0), by_weights)
    torch.testing.assert_close(losses.swv_loss(logits, p1, p2, target, 2.0, normalize="pixels"), by_pixels)


@pytest.mark.parametrize("normalize", ["weights", "pixels"])
def test_swv_omega_inf_drops_disagreeing_pixels(tiny, normalize):
    logits, p1, p2, target, ce = tiny
    expected = ce[0] if normalize == "weights" else ce[0] / 2
    torch.testing.assert_close(
        losses.swv_loss(logits, p1, p2, target, math.inf, normalize=normalize), expected
    )
    # the weighted mean is continuous in omega
    if normalize == "weights":
        torch.testing.assert_close(losses.swv_loss(logits, p1, p2, target, 1e6), expected)


def test_swv_ignored_pixels_count_nowhere(batch):
    logits, p1, p2, target = batch
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    changed = torch.where(ignored, logits * 100 + 7, logits)
    peers_changed = torch.where(ignored, -p1, p1)
    for normalize in ("weights", "pixels"):
        a = losses.swv_loss(logits, p1, p2, target, normalize=normalize)
        b = losses.swv_loss(changed, peers_changed, p2, target, normalize=normalize)
        torch.testing.assert_close(a, b)


def test_swv_no_valid_pixel_is_connected_zero(batch):
    logits, p1, p2, target = batch
    logits = logits.clone().requires_grad_()
    loss = losses.swv_loss(logits, p1, p2, torch.full_like(target, IGNORE))
    assert loss.item() == 0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("omega", [0.5, float("nan")])
def test_swv_bad_omega_raises(batch, omega):
    with pytest.raises(ValueError, match="omega"):
        losses.swv_loss(*batch, omega=omega)


def test_swv_bad_normalize_raises(batch):
    with pytest.raises(ValueError, match="'weights', 'pixels'"):
        losses.swv_loss(*batch, normalize="mean")


def test_shape_errors_name_the_argument(batch):
    logits, p1, p2, target = batch
    with pytest.raises(ValueError, match="peer2"):
        losses.swv_loss(logits, p1, p2[:, :3], target)
    with pytest.raises(ValueError, match="target"):
        losses.swv_loss(logits, p1, p2, target[:, :2])
    with pytest.raises(ValueError, match="4-D"):
        losses.pointwise_loss(logits[0], p1[0], p2[0])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        losses.swv_loss(logits, p1, p2, torch.full_like(target, 4))


def test_pointwise_identical_is_zero(batch):
    logits = batch[0]
    assert losses.pointwise_loss(logits, logits, logits).item() == 0


def test_pointwise_by_hand():
    # one pixel, two classes: sm(a) = (0.5, 0.5), sm(b) = (0.75, 0.25), c = a
    a = torch.zeros(1, 2, 1, 1)
    b = torch.tensor([[[[math.log(3.0)]], [[0.0]]]])  # sm = (0.75, 0.25)
    expected = 0.5 * (math.sqrt(2 * 0.25**2) + 0.0)
    torch.testing.assert_close(losses.pointwise_loss(a, b, a).item(), expected)


def test_pointwise_ignores_pixels(batch):
    logits, p1, p2, target = batch
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    a = losses.pointwise_loss(logits, p1, p2, target)
    b = losses.pointwise_loss(torch.where(ignored, -logits, logits), p1, p2, target)
    torch.testing.assert_close(a, b)


def test_rkd_identical_is_zero():
    x = _rand(4, 5)
    assert losses.rkd_distance_loss(x, x).item() == 0
    assert losses.rkd_angle_loss(x, x).item() == 0


def test_rkd_distance_is_scale_invariant():
    x = _rand(4, 3, 2, 2)
    assert losses.rkd_distance_loss(x, 3 * x).item() < 1e-10
    assert losses.rkd_distance_loss(x, _rand(4, 3, 2, 2, seed=9)).item() > 1e-3


@pytest.mark.parametrize("fn", [losses.rkd_distance_loss, losses.rkd_angle_loss])
def test_rkd_batch_of_one_raises(fn):
    with pytest.raises(ValueError, match="at least 2"):
        fn(_rand(1, 5), _rand(1, 5, seed=1))


def test_rkd_angle_matches_triple_loop():
    s, t = _rand(4, 5), _rand(4, 5, seed=1)

    def cos(e, k, i, j):
        u, v = e[i] - e[k], e[j] - e[k]
        if u.norm() == 0 or v.norm() == 0:
            return torch.tensor(0.0)
        return torch.dot(u / u.norm(), v / v.norm())

    total = 0.0
    for k, i, j in itertools.product(range(4), repeat=3):
        diff = abs(cos(s, k, i, j) - cos(t, k, i, j))
        total += 0.5 * diff**2 if diff < 1 else diff - 0.5
    torch.testing.assert_close(losses.rkd_angle_loss(s, t), total / 64)


def test_relations_by_hand():
    line = torch.tensor([[0.0], [1.0], [3.0]])  # distances 1, 3, 2: mean 2
    expected = torch.tensor([[0.0, 0.5, 1.5], [0.5, 0.0, 1.0], [1.5, 1.0, 0.0]])
    torch.testing.assert_close(losses.normalized_distances(line), expected)
    triangle = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # right angle at sample 0
    cos = losses.angle_cosines(triangle)
    assert cos[0, 1, 2].item() == pytest.approx(0.0, abs=1e-6)
    assert cos[1, 0, 2].item() == pytest.approx(2**-0.5)  # 45° at sample 1
    assert cos[2, 0, 0].item() == pytest.approx(1.0) and cos[2, 2, 0].item() == 0


def test_rkd_angles_from_gram_match_difference_vectors_far_from_origin():
    # The Gram route subtracts large numbers; centring + float64 must keep it exact where naive float32
    # Gram arithmetic would lose the small differences of embeddings sitting far from the origin.
    e = _rand(6, 2000) + 1e3
    unit = torch.nn.functional.normalize(e.double().unsqueeze(0) - e.double().unsqueeze(1), dim=2)
    expected = torch.bmm(unit, unit.transpose(1, 2)).float()
    torch.testing.assert_close(losses.angle_cosines(e), expected, atol=1e-5, rtol=0)


def test_rkd_angles_duplicate_rows_give_zero_cosine_and_finite_gradient():
    e = _rand(4, 6)
    e = torch.cat([e, e[1:2]]).requires_grad_(True)  # rows 1 and 4 are the same sample
    cos = losses.angle_cosines(e)
    assert cos[1, 4].abs().max().item() == 0 and cos[4, 1].abs().max().item() == 0
    assert cos[0, 1, 1].item() == pytest.approx(1.0)
    cos.sum().backward()
    assert torch.isfinite(e.grad).all()


def test_rkd_distance_matches_loop():
    s, t = _rand(3, 4), _rand(3, 4, seed=1)

    def normalized(e):
        d = torch.stack([torch.stack([(e[i] - e[j]).norm() for j in range(3)]) for i in range(3)])
        return d / d[d > 0].mean()

    expected = F.smooth_l1_loss(normalized(s), normalized(t))
    torch.testing.assert_close(losses.rkd_distance_loss(s, t), expected, atol=1e-5, rtol=1e-4)


def test_structure_loss_zeroes_ignored_pixels(batch):
    logits, p1, p2, target = batch
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    a = losses.structure_loss(logits, p1, p2, target)
    b = losses.structure_loss(*(torch.where(ignored, x * 5 + 1, x) for x in (logits, p1, p2)), target)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, losses.structure_loss(logits, p1, p2))


def test_structure_loss_combines_terms(batch):
    logits, p1, p2, _ = batch
    expected = 0.5 * sum(
        30 * losses.rkd_distance_loss(logits, p) + 60 * losses.rkd_angle_loss(logits, p) for p in (p1, p2)
    )
    torch.testing.assert_close(losses.structure_loss(logits, p1, p2), expected)
    assert losses.structure_loss(logits, logits, logits).item() == 0


def test_kl_identical_is_zero_and_matches_formula(batch):
    logits, p1, p2, _ = batch
    assert abs(losses.kl_loss(logits, logits, logits, temperature=2.0).item()) < 1e-6
    per_peer = [
        F.kl_div(F.log_softmax(logits / 2, 1), F.softmax(p / 2, 1), reduction="sum") / (3 * 9) * 4
        for p in (p1, p2)
    ]
    torch.testing.assert_close(losses.kl_loss(logits, p1, p2, temperature=2.0), 0.5 * sum(per_peer))


def test_crl_keep_all_is_cross_entropy(batch):
    logits, p1, p2, target = batch
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(losses.crl_loss(logits, p1, p2, target, keep_ratio=1.0), expected)


def test_crl_keeps_small_committee_loss_pixels(tiny):
    logits, p1, p2, target, ce = tiny
    # committee CE: pixel 0 = log(1 + e^-1) ≈ 0.31, pixel 1 = (0.31 + log(1 + e)) / 2 ≈ 0.81 -> keep pixel 0
    got = losses.crl_loss(logits, p1, p2, target, keep_ratio=0.5)
    torch.testing.assert_close(got, ce[0])
    with pytest.raises(ValueError, match=r"keep_ratio must be in \(0.0, 1.0\]"):
        losses.crl_loss(logits, p1, p2, target, keep_ratio=0.0)


ALL_LOSSES = {
    "swv": lambda a, b, c, m: losses.swv_loss(a, b, c, m),
    "pt": lambda a, b, c, m: losses.pointwise_loss(a, b, c, m),
    "st": lambda a, b, c, m: losses.structure_loss(a, b, c, m),
    "kl": lambda a, b, c, m: losses.kl_loss(a, b, c, m),
    "crl": lambda a, b, c, m: losses.crl_loss(a, b, c, m),
    "mutual": lambda a, b, c, m: losses.mutual_loss(a, b, c, m),
    "mutual_ce_pt": lambda a, b, c, m: losses.mutual_loss(a, b, c, m, omega=None, relation="pt"),
    "rkd_distance": lambda a, b, c, m: losses.rkd_distance_loss(a, b),
    "rkd_angle": lambda a, b, c, m: losses.rkd_angle_loss(a, c),
}


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradient_reaches_only_the_student(batch, name):
    logits, p1, p2, target = batch
    logits, p1, p2 = (x.clone().requires_grad_() for x in (logits, p1, p2))
    loss = ALL_LOSSES[name](logits, p1, p2, target)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() >= 0
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert p1.grad is None and p2.grad is None


def test_mutual_plain_ce_without_relation(batch):
    logits, p1, p2, target = batch
    got = losses.mutual_loss(logits, p1, p2, target, omega=None, relation=None)
    torch.testing.assert_close(got, F.cross_entropy(logits, target, ignore_index=IGNORE))


def test_mutual_lam_zero_is_swv(batch):
    got = losses.mutual_loss(*batch, omega=3.0, lam=0.0, relation="pt")
    torch.testing.assert_close(got, losses.swv_loss(*batch, omega=3.0))


@pytest.mark.parametrize("relation", sorted(losses.RELATION_LOSSES))
def test_mutual_combines_supervised_and_relation(batch, relation):
    got = losses.mutual_loss(*batch, lam=0.2, relation=relation)
    relation_term = losses.create_relation_loss(relation)(*batch, ignore_index=IGNORE)
    torch.testing.assert_close(got, 0.8 * losses.swv_loss(*batch) + 0.2 * relation_term)


@pytest.mark.parametrize("relation", [*sorted(losses.RELATION_LOSSES), None])
@pytest.mark.parametrize("omega", [2.0, None])
def test_loss_terms_name_the_terms_of_eq9_and_match_mutual_loss(batch, relation, omega):
    """One call gives total, supervised and relation; total is Eq. (9) and mutual_loss, value and gradient."""
    logits, p1, p2, target = batch
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    terms = losses.loss_terms(a, p1, p2, target, omega=omega, lam=0.3, relation=relation)
    total = losses.mutual_loss(b, p1, p2, target, omega=omega, lam=0.3, relation=relation)
    supervised = (
        losses.swv_loss(logits, p1, p2, target, omega)
        if omega
        else F.cross_entropy(logits, target, ignore_index=IGNORE)
    )
    torch.testing.assert_close(terms.supervised, supervised)
    if relation is None:
        assert terms.relation is None and terms.total is terms.supervised  # no (1 - λ) without a relation
    else:
        expected = losses.create_relation_loss(relation)(logits, p1, p2, target, ignore_index=IGNORE)
        torch.testing.assert_close(terms.relation, expected)
        assert terms.total.item() == ((1 - 0.3) * terms.supervised + 0.3 * terms.relation).item()
    assert torch.equal(terms.total, total)  # bit-identical to mutual_loss
    terms.total.backward()
    total.backward()
    assert torch.equal(a.grad, b.grad)


def test_mutual_invalid_arguments_raise(batch):
    with pytest.raises(ValueError, match=r"\['crl', 'kl', 'pt', 'st'\] or None"):
        losses.mutual_loss(*batch, relation="mse")
    with pytest.raises(ValueError, match="lam"):
        losses.mutual_loss(*batch, lam=1.5)
    with pytest.raises(ValueError, match="lam"):
        losses.loss_terms(*batch, lam=-0.1)
    with pytest.raises(ValueError, match="valid names"):
        losses.create_relation_loss("ST")


def test_registry_exposes_the_four_relations():
    assert losses.RELATION_LOSSES == {
        "st": losses.structure_loss,
        "pt": losses.pointwise_loss,
        "kl": losses.kl_loss,
        "crl": losses.crl_loss,
    }


def test_swv_levels_by_hand():
    assert losses.swv_levels(2) == (2.0, 0.5)
    assert losses.swv_levels(1) == (1.0, 1.0)
    assert losses.swv_levels(math.inf) == (1.0, 0.0)
    with pytest.raises(ValueError, match="omega"):
        losses.swv_levels(0.5)
