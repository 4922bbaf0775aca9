"""Stage-2 losses of ARML: Samples Weighted Voting and Samples Relation Mining (paper §2.3–2.4, Eq. 4–9).

Conventions shared by every function here:

* ``logits``, ``peer1``, ``peer2`` are raw ``B×C×H×W`` logits of networks F_a, F_b, F_c (P_a, P_b, P_c).
* ``target`` is a ``B×H×W`` int64 pseudo mask with values in ``[0, C)`` or ``ignore_index`` (the trainer
  maps the background class 4 to 255). Ignored pixels count nowhere: not in sums, not in denominators.
* Peers are constants: they are detached inside each function, so gradients reach ``logits`` only.
* A loss with nothing to average returns ``logits.sum() * 0``, a zero still connected to ``logits``.

>>> import torch
>>> a, b, c = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
>>> m = torch.randint(0, 4, (2, 8, 8))
>>> loss = mutual_loss(a, b, c, m, omega=2.0, lam=0.2, relation="st")  # the paper's setting
>>> terms = loss_terms(a, b, c, m, omega=2.0, lam=0.2, relation="st")  # the same, with its named terms
>>> bool(terms.total == loss), bool(terms.total == 0.8 * terms.supervised + 0.2 * terms.relation)
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from arml.options import SWV_NORMALIZATIONS, check_choice


def _check_peers(logits: Tensor, peer1: Tensor, peer2: Tensor) -> None:
    if logits.dim() != 4:
        raise ValueError(f"logits must be B×C×H×W (4-D), found shape {tuple(logits.shape)}")
    for name, peer in (("peer1", peer1), ("peer2", peer2)):
        if peer.shape != logits.shape:
            raise ValueError(
                f"{name} must have the shape of logits {tuple(logits.shape)}, found {tuple(peer.shape)}"
            )


def _valid_mask(logits: Tensor, target: Tensor | None, ignore_index: int) -> Tensor:
    """Return the ``B×H×W`` bool mask of pixels that count, after checking ``target``."""
    b, c, h, w = logits.shape
    if target is None:
        return torch.ones((b, h, w), dtype=torch.bool, device=logits.device)
    if target.shape != (b, h, w):
        raise ValueError(f"target must be B×H×W = {(b, h, w)} to match logits, found {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices (int64), found dtype {target.dtype}")
    valid = target != ignore_index
    if bool((valid & ((target < 0) | (target >= c))).any()):
        raise ValueError(f"target values must be in [0, {c}) or ignore_index={ignore_index}")
    return valid


def _masked_mean(values: Tensor, valid: Tensor, logits: Tensor) -> Tensor:
    """Mean of ``values`` over ``valid`` pixels; a zero connected to ``logits`` when none is valid."""
    count = valid.sum()
    if count == 0:
        return logits.sum() * 0
    return torch.where(valid, values, torch.zeros_like(values)).sum() / count


def _check_in_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> float:
    value = float(value)
    if math.isnan(value) or value > high or (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}], got {value}")
    return value


def _cross_entropy(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Plain CE over valid pixels (Table 4's "CE"); unlike ``F.cross_entropy``, no NaN when none is valid."""
    valid = _valid_mask(logits, target, ignore_index)
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    return _masked_mean(ce, valid, logits)


def swv_levels(omega: float) -> tuple[float, float]:
    """The two weights of SWV, Eq. (4): ``(ω, 1/ω)`` where the voters agree / disagree; ω = ∞ gives ``(1, 0)``.

    Raises:
        ValueError: unless ``1 <= omega <= inf``.
    """
    omega = _check_in_range("omega (paper §2.3)", omega, 1.0, math.inf)
    return (1.0, 0.0) if math.isinf(omega) else (omega, 1.0 / omega)


def swv_loss(
    logits: Tensor,
    peer1: Tensor,
    peer2: Tensor,
    target: Tensor,
    omega: float = 2.0,
    ignore_index: int = 255,
    normalize: str = "weights",
) -> Tensor:
    """Samples Weighted Voting, Eq. (4): cross-entropy of P_a reweighted by the vote of P_b and P_c.

    Each valid pixel's CE(P_a, M) gets weight ``omega`` where ``argmax_c P_b == argmax_c P_c`` and
    ``1/omega`` where they differ. ``omega=math.inf`` uses weights 1 and 0, i.e. disagreeing pixels are
    dropped (Table 3's "+∞"). Eq. (4) is an unnormalised sum; we divide by

    * ``"weights"`` (default): the sum of the weights over valid pixels, a weighted mean whose scale does not
      depend on ``omega`` and whose ``omega → ∞`` limit equals the ``math.inf`` case;
    * ``"pixels"``: the number of valid pixels, as the released code does (``3_train_stage2.py:29-44``;
      it divides by all N·H·W pixels and has no ignored pixels, so the two agree when nothing is ignored).
      With ``math.inf`` this is the CE summed over agreeing pixels divided by the valid-pixel count.

    Args:
        logits: ``B×C×H×W`` logits P_a of the network being trained.
        peer1, peer2: ``B×C×H×W`` logits P_b, P_c of the voters (detached).
        target: ``B×H×W`` int64 pseudo mask M in ``[0, C)`` or ``ignore_index``.
        omega: weight coefficient ω in ``[1, +inf]``; the paper uses 2; 1 gives plain CE.
        ignore_index: label of pixels that count nowhere.
        normalize: ``"weights"`` or ``"pixels"``, see above.

    Returns:
        Scalar ``>= 0``; ``logits.sum() * 0`` when no valid pixel has a positive weight.
    """
    _check_peers(logits, peer1, peer2)
    check_choice("normalize", normalize, SWV_NORMALIZATIONS)
    high, low = swv_levels(omega)
    valid = _valid_mask(logits, target, ignore_index)
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    agree = peer1.detach().argmax(dim=1) == peer2.detach().argmax(dim=1)
    weights = torch.where(agree, high, low).to(ce.dtype) * valid
    denominator = weights.sum() if normalize == "weights" else valid.sum().to(ce.dtype)
    if denominator == 0:
        return logits.sum() * 0
    return (torch.where(valid, ce, torch.zeros_like(ce)) * weights).sum() / denominator


def pointwise_loss(
    logits: Tensor, peer1: Tensor, peer2: Tensor, target: Tensor | None = None, ignore_index: int = 255
) -> Tensor:
    """Point-wise relation loss L_pt, Eq. (5).

    ``½·(mean_p ‖sm(P_a)_p − sm(P_b)_p‖₂ + mean_p ‖sm(P_a)_p − sm(P_c)_p‖₂)``, with the softmax ``sm`` over
    classes (dim 1) and the per-pixel, unsquared L2 norm of the class-probability difference. The released
    ``PTLoss`` (an MSE of a softmax over the batch axis, unused in training) is not reproduced.

    Args:
        logits: ``B×C×H×W`` logits P_a (student).
        peer1, peer2: ``B×C×H×W`` logits P_b, P_c (teachers, detached).
        target: optional ``B×H×W`` mask whose ``ignore_index`` pixels are left out; without it all count.
        ignore_index: label of pixels to leave out.

    Returns:
        Scalar in ``[0, √2]``.
    """
    _check_peers(logits, peer1, peer2)
    valid = _valid_mask(logits, target, ignore_index)
    prob = logits.softmax(dim=1)
    terms = [
        _masked_mean(torch.linalg.vector_norm(prob - peer.detach().softmax(dim=1), dim=1), valid, logits)
        for peer in (peer1, peer2)
    ]
    return 0.5 * (terms[0] + terms[1])


def _centered_gram(e: Tensor) -> Tensor:
    """``B×B`` Gram matrix of the rows of ``e`` after removing their mean, in float64 where the device has it.

    Distances and angles are translation invariant, so centring changes nothing but the size of the numbers:
    every relation below is read off this matrix (``‖e_i − e_j‖² = G_ii + G_jj − 2·G_ij``), which costs one
    ``B×D`` matmul instead of the ``B×B×D`` tensor of difference vectors the angle term would otherwise need.
    Float64 keeps the differences of large Gram entries exact enough (MPS has no float64: float32 there).
    """
    work = torch.float32 if e.device.type == "mps" else torch.float64
    x = e.to(work)
    x = x - x.mean(dim=0, keepdim=True)
    return x @ x.t()


def _distances_from_gram(g: Tensor) -> Tensor:
    squared = torch.diagonal(g)
    d2 = (squared.unsqueeze(0) + squared.unsqueeze(1) - 2 * g).clamp(min=1e-12)
    d = d2.sqrt() * (1 - torch.eye(len(g), device=g.device, dtype=g.dtype))
    mean_positive = d.sum() / (d > 0).sum().clamp(min=1)
    return d / mean_positive.clamp(min=1e-12)


def _angles_from_gram(g: Tensor) -> Tensor:
    diag = torch.diagonal(g)
    inner = g.unsqueeze(0) - g.unsqueeze(2) - g.unsqueeze(1) + diag.view(-1, 1, 1)  # [k, i, j]
    norm2 = torch.diagonal(inner, dim1=1, dim2=2)  # [k, i] = ‖e_i − e_k‖²
    tiny = 1e-12 * diag.detach().max().clamp(min=1e-30)  # below this a difference is rounding noise
    nonzero = norm2 > tiny
    inv = torch.where(nonzero, norm2.clamp(min=tiny).rsqrt(), torch.zeros_like(norm2))
    return inner * inv.unsqueeze(2) * inv.unsqueeze(1)


def normalized_distances(e: Tensor) -> Tensor:
    """The relations L_dist compares, Eq. (6): ``B×B`` distances between the rows of ``e``, over their mean.

    Euclidean distances (diagonal 0) divided by the mean of the positive ones, as RKD does, so the
    relation is invariant to a global rescaling. ``e`` is ``B×D`` (one flattened sample per row).
    """
    return _distances_from_gram(_centered_gram(e)).to(e.dtype)


def angle_cosines(e: Tensor) -> Tensor:
    """The relations L_ang compares, Eq. (7): ``B×B×B`` cosines ``[k, i, j] = <unit(e_i − e_k), unit(e_j − e_k)>``.

    The angle at vertex ``k`` of the triangle of samples ``(i, k, j)``, computed from the Gram matrix.

    ``<e_i − e_k, e_j − e_k> = G_ij − G_ki − G_kj + G_kk``; a difference vector of (relative) length 0, as
    ``i = k``, is the zero vector and gives cosine 0, as ``F.normalize`` does in RKD's reference code.
    """
    return _angles_from_gram(_centered_gram(e)).to(e.dtype)


def _rkd(student: Tensor, teachers: tuple[Tensor, ...], alpha: float, beta: float) -> Tensor:
    """Mean over ``teachers`` of ``α·L_dist + β·L_ang`` on flattened rows; one Gram matrix per network.

    Runs in (at least) float32 with autocast off: squared norms of 5·224² logits overflow float16.
    """
    for teacher in teachers:
        if teacher.shape != student.shape:
            raise ValueError(
                f"teacher must have the shape of student {tuple(student.shape)}, found {tuple(teacher.shape)}"
            )
    if student.dim() < 2 or student.shape[0] < 2:
        raise ValueError(
            f"relational losses need a batch of at least 2 samples (B×D), found {tuple(student.shape)}"
        )
    dtype = torch.promote_types(student.dtype, torch.float32)
    s = student.flatten(1).to(dtype)
    loss = s.sum() * 0
    with torch.autocast(s.device.type, enabled=False):
        mine = _centered_gram(s)
        with torch.no_grad():
            theirs = [_centered_gram(t.detach().flatten(1).to(dtype)) for t in teachers]
        for weight, relation in ((alpha, _distances_from_gram), (beta, _angles_from_gram)):
            if weight == 0:
                continue
            ours = relation(mine).to(dtype)
            with torch.no_grad():
                targets = [relation(g).to(dtype) for g in theirs]
            loss = loss + weight * sum(F.smooth_l1_loss(ours, r, beta=1.0) for r in targets) / len(targets)
    return loss


def rkd_distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Distance-wise relation loss L_dist, Eq. (6), as RKD (Park et al., CVPR 2019) and the released code.

    Each row of ``student``/``teacher`` is one sample (one image's logits, flattened). Pairwise Euclidean
    distances (diagonal 0) on each side are divided by that side's mean positive off-diagonal distance, then
    compared with Huber (``F.smooth_l1_loss``, β = 1) averaged over all B×B entries, diagonal included.
    Computed in float32 with autocast off.

    Args:
        student: ``B×...`` embeddings, ``B >= 2``; gradients flow here.
        teacher: same shape; detached.

    Returns:
        Scalar ``>= 0``; invariant to a global rescaling of either side.

    Raises:
        ValueError: if the shapes differ or ``B < 2`` (the released code returns NaN there).
    """
    return _rkd(student, (teacher,), alpha=1.0, beta=0.0)


def rkd_angle_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Angle-wise relation loss L_ang, Eq. (7), as RKD and the released code.

    For every anchor k, ``e_{k,i} = (s_i − s_k)/‖s_i − s_k‖`` (zero vectors stay zero) and
    ``cos_{k,i,j} = <e_{k,i}, e_{k,j}>``; Huber (β = 1) between student and teacher cosines averaged over all
    B×B×B entries. Computed from the B×B Gram matrix: O(B²·D) time, O(B³) memory (no B×B×D tensor).

    Args:
        student: ``B×...`` embeddings, ``B >= 2``; gradients flow here.
        teacher: same shape; detached.

    Returns:
        Scalar ``>= 0``.

    Raises:
        ValueError: if the shapes differ or ``B < 2``.
    """
    return _rkd(student, (teacher,), alpha=0.0, beta=1.0)


def structure_loss(
    logits: Tensor,
    peer1: Tensor,
    peer2: Tensor,
    target: Tensor | None = None,
    alpha: float = 30.0,
    beta: float = 60.0,
    ignore_index: int = 255,
) -> Tensor:
    """Structure-wise relation loss L_st, Eq. (8), against both peers (the ½ of Eq. 6–7).

    ``½·[(α·L_dist + β·L_ang)(P_a, P_b) + (α·L_dist + β·L_ang)(P_a, P_c)]`` where a sample is one image's
    flattened ``C×H×W`` logits, so relations are across the B images of the batch (released code). The
    student's distances and angles are computed once for both peers.

    Args:
        logits: ``B×C×H×W`` logits P_a (student), ``B >= 2``.
        peer1, peer2: ``B×C×H×W`` logits P_b, P_c (teachers, detached).
        target: optional ``B×H×W`` mask; its ``ignore_index`` pixels are set to 0 in all three embeddings.
        alpha: distance weight α (paper: 30).
        beta: angle weight β (paper: 60).
        ignore_index: label of pixels to zero out.

    Returns:
        Scalar ``>= 0``.
    """
    _check_peers(logits, peer1, peer2)
    alpha, beta = _check_in_range("alpha", alpha, 0, math.inf), _check_in_range("beta", beta, 0, math.inf)
    valid = _valid_mask(logits, target, ignore_index).unsqueeze(1)
    student, *teachers = (x.masked_fill(~valid, 0) for x in (logits, peer1.detach(), peer2.detach()))
    return _rkd(student, tuple(teachers), alpha, beta)


def kl_loss(
    logits: Tensor,
    peer1: Tensor,
    peer2: Tensor,
    target: Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = 255,
) -> Tensor:
    """Knowledge distillation towards the peers (Hinton et al. 2015, Table 4's "KL").

    ``½·Σ_{peer} mean_p KL(softmax(peer_p/T) ‖ softmax(logits_p/T))·T²``, softmax over classes.

    Args:
        logits: ``B×C×H×W`` student logits.
        peer1, peer2: ``B×C×H×W`` teacher logits (detached).
        target: optional ``B×H×W`` mask; its ``ignore_index`` pixels are left out.
        temperature: T > 0.
        ignore_index: label of pixels to leave out.

    Returns:
        Scalar ``>= 0``.
    """
    _check_peers(logits, peer1, peer2)
    _check_in_range("temperature", temperature, 0.0, math.inf, low_open=True)
    valid = _valid_mask(logits, target, ignore_index)
    log_student = F.log_softmax(logits / temperature, dim=1)
    terms = []
    for peer in (peer1, peer2):
        log_teacher = F.log_softmax(peer.detach() / temperature, dim=1)
        kl = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(dim=1)
        terms.append(_masked_mean(kl, valid, logits) * temperature**2)
    return 0.5 * (terms[0] + terms[1])


def crl_loss(
    logits: Tensor,
    peer1: Tensor,
    peer2: Tensor,
    target: Tensor,
    keep_ratio: float = 0.7,
    ignore_index: int = 255,
) -> Tensor:
    """Committee small-loss selection, our reading of Table 4's "CRL" baseline (ref. [17]).

    The paper gives no formula and the released code no implementation, so this is a co-teaching style
    committee: the peers' per-pixel CE against ``target`` is averaged (detached); over the whole batch the
    ``round(keep_ratio·N_valid)`` valid pixels (at least 1) with the smallest committee loss are selected,
    ties broken arbitrarily; the student's CE is averaged over the selected pixels only.

    Args:
        logits: ``B×C×H×W`` student logits.
        peer1, peer2: ``B×C×H×W`` committee logits (detached).
        target: ``B×H×W`` int64 pseudo mask in ``[0, C)`` or ``ignore_index``.
        keep_ratio: fraction of valid pixels kept, in ``(0, 1]``; 1 gives plain CE.
        ignore_index: label of pixels that count nowhere.

    Returns:
        Scalar ``>= 0``; ``logits.sum() * 0`` when no pixel is valid.
    """
    _check_peers(logits, peer1, peer2)
    _check_in_range("keep_ratio", keep_ratio, 0.0, 1.0, low_open=True)
    valid = _valid_mask(logits, target, ignore_index).flatten()
    n_valid = int(valid.sum())
    if n_valid == 0:
        return logits.sum() * 0

    def pixel_ce(x: Tensor) -> Tensor:
        return F.cross_entropy(x, target, ignore_index=ignore_index, reduction="none").flatten()

    with torch.no_grad():
        committee = (0.5 * (pixel_ce(peer1.detach()) + pixel_ce(peer2.detach()))).masked_fill(
            ~valid, math.inf
        )
        keep = committee.topk(max(1, round(keep_ratio * n_valid)), largest=False).indices
    return pixel_ce(logits)[keep].mean()


RELATION_LOSSES: dict[str, Callable[..., Tensor]] = {
    "st": structure_loss,
    "pt": pointwise_loss,
    "kl": kl_loss,
    "crl": crl_loss,
}


def create_relation_loss(name: str) -> Callable[..., Tensor]:
    """Return the relation loss registered as ``name`` (one of ``RELATION_LOSSES``: st, pt, kl, crl).

    Every entry is called as ``fn(logits, peer1, peer2, target, ..., ignore_index=...)``.
    """
    if name not in RELATION_LOSSES:
        raise ValueError(f"unknown relation loss {name!r}; valid names: {sorted(RELATION_LOSSES)}")
    return RELATION_LOSSES[name]


class LossTerms(NamedTuple):
    """The named terms of Eq. (9) for one network, from one call of :func:`loss_terms`.

    Attributes:
        total: ``(1 − λ)·supervised + λ·relation`` (or ``supervised`` alone without a relation term); the
            tensor to backpropagate.
        supervised: L_swv (Eq. 4), or plain CE over valid pixels when ``omega`` is None.
        relation: the relation term (L_st of Eq. 8, or ``"pt"``, ``"kl"``, ``"crl"``), None without one.
    """

    total: Tensor
    supervised: Tensor
    relation: Tensor | None


def loss_terms(
    logits: Tensor,
    peer1: Tensor,
    peer2: Tensor,
    target: Tensor,
    omega: float | None = 2.0,
    lam: float = 0.2,
    relation: str | None = "st",
    alpha: float = 30.0,
    beta: float = 60.0,
    ignore_index: int = 255,
    normalize: str = "weights",
    temperature: float = 1.0,
) -> LossTerms:
    """Segmentation loss of one network, Eq. (9), with its terms: ``(1 − λ)·L_swv + λ·L_relation``.

    The supervised term is :func:`swv_loss`, or plain CE over valid pixels when ``omega`` is None.
    With ``relation=None`` the loss is the supervised term alone, without the (1 − λ) factor: λ only balances
    when a relation term exists. The relation term receives ``target`` so ignored pixels are left out of it
    too; ``"crl"`` is itself a supervised CE variant, giving ``(1 − λ)·supervised + λ·crl_loss`` (with its
    default ``keep_ratio``). Every term is computed once: ``total`` is built from the two others.

    Args:
        logits: ``B×C×H×W`` logits of the network being trained.
        peer1, peer2: ``B×C×H×W`` logits of the two other networks (detached).
        target: ``B×H×W`` int64 pseudo mask in ``[0, C)`` or ``ignore_index``.
        omega: SWV weight ω in ``[1, +inf]`` (paper: 2), or None for plain CE.
        lam: balance λ in ``[0, 1]`` (paper: 0.2).
        relation: ``"st"`` (paper), ``"pt"``, ``"kl"``, ``"crl"`` or None.
        alpha: distance weight α of ``"st"`` (paper: 30).
        beta: angle weight β of ``"st"`` (paper: 60).
        ignore_index: label of pixels that count nowhere.
        normalize: SWV normalisation, ``"weights"`` or ``"pixels"``.
        temperature: temperature of ``"kl"``.

    Returns:
        :class:`LossTerms` ``(total, supervised, relation)``, scalars ``>= 0`` (``relation`` None without one).
    """
    _check_in_range("lam", lam, 0.0, 1.0)
    if relation is not None and relation not in RELATION_LOSSES:
        raise ValueError(f"unknown relation {relation!r}; valid choices: {sorted(RELATION_LOSSES)} or None")
    if omega is None:
        _check_peers(logits, peer1, peer2)
        supervised = _cross_entropy(logits, target, ignore_index)
    else:
        supervised = swv_loss(logits, peer1, peer2, target, omega, ignore_index, normalize)
    if relation is None:
        return LossTerms(supervised, supervised, None)
    extra = {"st": {"alpha": alpha, "beta": beta}, "kl": {"temperature": temperature}}.get(relation, {})
    rel = create_relation_loss(relation)(logits, peer1, peer2, target, ignore_index=ignore_index, **extra)
    return LossTerms((1 - lam) * supervised + lam * rel, supervised, rel)


def mutual_loss(
    logits: Tensor,
    peer1: Tensor,
    peer2: Tensor,
    target: Tensor,
    omega: float | None = 2.0,
    lam: float = 0.2,
    relation: str | None = "st",
    alpha: float = 30.0,
    beta: float = 60.0,
    ignore_index: int = 255,
    normalize: str = "weights",
    temperature: float = 1.0,
) -> Tensor:
    """Total segmentation loss of one network, Eq. (9): ``(1 − λ)·L_swv + λ·L_relation``.

    The ``total`` of :func:`loss_terms` (same arguments, same value and gradient); see it for the terms.

    Returns:
        Scalar ``>= 0``.
    """
    return loss_terms(
        logits, peer1, peer2, target, omega, lam, relation, alpha, beta, ignore_index, normalize, temperature
    ).total
