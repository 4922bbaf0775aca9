"""What the stage-2 losses see on one batch, as arrays for the notebooks 04–05 and their figures.

Stage 2 trains three peers F_a, F_b, F_c on the pseudo masks M. Two of its losses weigh or compare the peers'
logits P in ways that are easy to state and hard to picture; the functions here compute those intermediate
quantities with the loss code's own pieces, so a figure shows exactly what training optimises:

* SWV, Eq. (4): every pixel's cross-entropy gets weight ω where the voters F_b and F_c agree (same argmax)
  and 1/ω where they differ (:func:`swv_weight_map`, from :func:`arml.losses.swv_levels`);
  :func:`voter_agreement` is the share of pixels where they agree.
* SRM's L_st, Eq. (6–8): relations between the images of a batch, distances (Eq. 6) and angles (Eq. 7)
  between their flattened logits (:func:`relation_matrices`, from :func:`arml.losses.normalized_distances`
  and :func:`arml.losses.angle_cosines`).

>>> import numpy as np
>>> p_b = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # C×H×W = 2×1×2: class 0, then class 1
>>> p_c = np.array([[[1.0, 1.0]], [[0.0, 0.0]]])  # class 0 at both pixels
>>> swv_weight_map(p_b, p_c, omega=2.0).tolist()
[[2.0, 0.5]]
"""

from __future__ import annotations

import numpy as np
import torch

from arml.datasets import IGNORE_INDEX
from arml.losses import angle_cosines, normalized_distances, swv_levels
from arml.runtime import to_numpy


def swv_weight_map(
    peer1, peer2, target=None, omega: float = 2.0, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """The per-pixel weights of SWV, Eq. (4): ω where the voters' argmax agree, 1/ω where they differ.

    ``omega=inf`` gives 1 and 0 (disagreeing pixels dropped). Ignored pixels (``target == ignore_index``)
    are NaN. :func:`arml.losses.swv_loss` (``normalize="weights"``) is the cross-entropy averaged with
    exactly these weights: ``Σ w·CE / Σ w`` over the pixels that are not NaN.

    Args:
        peer1, peer2: ``B×C×H×W`` or ``C×H×W`` logits P_b, P_c (tensors or arrays).
        target: optional mask of the same batch shape (``B×H×W`` or ``H×W``).
        omega: ω ≥ 1 (the paper uses 2).
        ignore_index: label of pixels that count nowhere.

    Returns:
        Float array of shape ``B×H×W`` (or ``H×W``).
    """
    high, low = swv_levels(omega)
    p1, p2 = to_numpy(peer1), to_numpy(peer2)
    if p1.shape != p2.shape or p1.ndim not in (3, 4):
        raise ValueError(
            f"peer1 and peer2 must share a C×H×W or B×C×H×W shape, got {p1.shape} and {p2.shape}"
        )
    weights = np.where(p1.argmax(-3) == p2.argmax(-3), high, low)
    if target is not None:
        target = to_numpy(target)
        if target.shape != weights.shape:
            raise ValueError(f"target shape {target.shape} does not match the logits' {weights.shape}")
        weights = np.where(target == ignore_index, np.nan, weights)
    return weights


def voter_agreement(pred_b, pred_c, valid=None) -> float:
    """Share of pixels where the voters' label maps agree (the pixels SWV weighs up), NaN without pixels.

    Args:
        pred_b, pred_c: label maps (argmax of P_b and P_c) of the same shape.
        valid: optional boolean mask of the pixels that count, e.g. ``np.isfinite(swv_weight_map(...))``.
    """
    agree = to_numpy(pred_b) == to_numpy(pred_c)
    if valid is not None:
        valid = to_numpy(valid).astype(bool)
        if valid.shape != agree.shape:
            raise ValueError(f"valid shape {valid.shape} does not match the label maps' {agree.shape}")
        agree = agree[valid]
    return float(agree.mean()) if agree.size else float("nan")


def relation_matrices(logits, target=None, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """The relations L_st compares (Eq. 6–7), for one network's ``B×C×H×W`` logits.

    Samples are whole images' flattened logits, ignored pixels zeroed, exactly as in
    :func:`arml.losses.structure_loss`, so ``α·Huber(d_a, d_b) + β·Huber(a_a, a_b)`` of two networks'
    matrices is their L_st term.

    Returns:
        ``(distances, angles)``: the ``B×B`` distance matrix over its mean positive entry (Eq. 6), and the
        ``B×B×B`` cosines ``[k, i, j] = cos∠(x_i − x_k, x_j − x_k)`` at anchor image k (Eq. 7).
    """
    x = torch.as_tensor(to_numpy(logits)).float()
    if x.dim() != 4 or x.shape[0] < 2:
        raise ValueError(f"logits must be B×C×H×W with B >= 2, got shape {tuple(x.shape)}")
    if target is not None:
        t = torch.as_tensor(to_numpy(target))
        x = x.masked_fill((t == ignore_index).unsqueeze(1), 0)
    e = x.flatten(1)
    with torch.no_grad():
        return normalized_distances(e).numpy(), angle_cosines(e).numpy()
