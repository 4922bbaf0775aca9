"""Checks for the exercises of notebooks 01–03 (stage 1: CAMs, ARS, pseudo masks).

Each ``check_*(fn)`` runs the student's ``fn`` and ``arml``'s implementation on a few seeded random inputs,
compares them with ``torch.testing.assert_close``-like tolerances, prints ``✓ … passed`` or ``✗ …`` with a
hint, and returns a bool. A check never raises, so a student copy runs from top to bottom.

>>> import torch
>>> check_reactivation(lambda f, mlp, conv, lam: f)  # doctest: +ELLIPSIS
✗ check_reactivation: you returned f' unchanged: multiply it by both gates...
False
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from arml.analysis import score_masks
from arml.ars import CrissCrossAttention, Reactivation
from arml.cams import background_mask, grey_level, normalize_cams
from arml.exercises._core import run_cases

__all__ = ["check_background", "check_cca", "check_iou", "check_normalize_cams", "check_reactivation"]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _seeded(seed: int, build: Callable):
    """Build a module with seeded initial weights without touching the global random state."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


# ----------------------------------------------------------------------------------------------- notebook 01


def check_normalize_cams(fn: Callable) -> bool:
    """Exercise 01.2: ``fn(cams)`` min-max normalises ``B×K×H×W`` CAMs the released code's way ("global").

    One minimum and one maximum over *all classes* of an image (not one per class map), then
    ``(cams − min) / (max − min + 1e-5)``: :func:`arml.cams.normalize_cams` with ``mode="global"``.
    """
    cases = []
    for seed, shape in enumerate([(2, 4, 8, 8), (3, 4, 5, 7)]):
        cams = torch.randn(shape, generator=_generator(seed)) * torch.tensor([1.0, 3.0, 0.3, 2.0]).view(
            1, 4, 1, 1
        )
        cases.append(((cams,), normalize_cams(cams, "global")))
    mistakes = [
        (
            "you normalised each class map on its own: the released code takes one min and max over all "
            "classes of an image (amin/amax over dims (1, 2, 3), keepdim=True)",
            lambda c: normalize_cams(c, "per_class"),
        ),
        (
            "your min and max run over the whole batch: take them per image (dims (1, 2, 3), not all dims)",
            lambda c: (c - c.min()) / (c.max() - c.min() + 1e-5),
        ),
        ("close, but add the epsilon 1e-5 to the denominator (max − min + 1e-5)", _global_without_eps),
    ]
    return run_cases(
        "check_normalize_cams",
        fn,
        cases,
        mistakes,
        tip="Expected (cams − lo) / (hi − lo + 1e-5) with lo, hi = amin, amax over dims (1, 2, 3), keepdim=True.",
    )


def _global_without_eps(cams: torch.Tensor) -> torch.Tensor:
    lo, hi = cams.amin(dim=(1, 2, 3), keepdim=True), cams.amax(dim=(1, 2, 3), keepdim=True)
    return (cams - lo) / (hi - lo)


def check_background(fn: Callable) -> bool:
    """Exercise 01.3: ``fn(images, threshold)`` marks white glass: ``B×H×W`` bool, grey level > ``threshold``.

    ``images`` are ``B×3×H×W`` in [0, 1]; the grey level is ITU-R 601 luma on the 0–255 scale,
    ``255·(0.299 R + 0.587 G + 0.114 B)`` (what ``cv2.cvtColor`` computes). Compared with
    :func:`arml.cams.background_mask` with ``min_size=1`` (the small-blob step left out).
    """
    cases = []
    for seed, (shape, threshold) in enumerate([((2, 3, 16, 16), 200.0), ((1, 3, 9, 13), 180.0)]):
        g = _generator(seed)
        images = 0.55 + 0.45 * torch.rand(shape, generator=g)
        images[:, 2] = torch.rand(shape[0], *shape[2:], generator=g)  # blue varies most: luma ≠ plain mean
        cases.append(((images, threshold), background_mask(images, threshold, min_size=1)))
    mistakes = [
        (
            "your mask is the opposite one: background is where the grey level is *above* the threshold",
            lambda im, t: grey_level(im) <= t,
        ),
        (
            "you averaged R, G and B: the grey level is the luma 0.299 R + 0.587 G + 0.114 B",
            lambda im, t: 255 * im.mean(dim=1) > t,
        ),
        (
            "the images are in [0, 1] but the threshold is on the 0–255 scale: multiply by 255",
            lambda im, t: grey_level(im) / 255 > t,
        ),
        (
            "return the boolean mask (grey > threshold), not the grey levels",
            lambda im, t: grey_level(im),
        ),
    ]
    return run_cases(
        "check_background",
        fn,
        cases,
        mistakes,
        tip="Expected grey = 255·(0.299 R + 0.587 G + 0.114 B) with R, G, B = images[:, 0], [:, 1], [:, 2]; "
        "return grey > threshold.",
    )


# ----------------------------------------------------------------------------------------------- notebook 02


def _cca_variant(f, q, k, v, gamma, self_once=True, joint=True, residual=True, use_gamma=True, dim=-1):
    """Criss-cross attention with one of the usual mistakes switched on (for the hints)."""
    h = f.shape[2]
    e_col = torch.einsum("bcij,bckj->bijk", q, k)
    e_row = torch.einsum("bcij,bcil->bijl", q, k)
    if self_once:
        e_col = e_col.masked_fill(torch.eye(h, dtype=torch.bool).view(1, h, 1, h), float("-inf"))
    if joint:
        a = torch.cat([e_col, e_row], dim=-1).softmax(dim=dim)
        a_col, a_row = a[..., :h], a[..., h:]
    else:
        a_col, a_row = e_col.softmax(dim=-1), e_row.softmax(dim=-1)
    context = torch.einsum("bijk,bckj->bcij", a_col, v) + torch.einsum("bijl,bcil->bcij", a_row, v)
    context = gamma * context if use_gamma else context
    return f + context if residual else context


def check_cca(fn: Callable) -> bool:
    """Exercise 02.1: ``fn(f, q, k, v, gamma)`` is criss-cross attention, Eq. (1)–(2), paper recipe.

    ``f``: ``B×C×H×W`` features; ``q``, ``k``: ``B×C'×H×W`` query and key; ``v``: ``B×C×H×W`` value; ``gamma``
    a float. For every position ``u = (i, j)`` the keys are the ``H + W − 1`` positions of column ``j`` and row
    ``i`` (``u`` once); energies ``Q_u · K_key`` (Eq. 1), one softmax over those keys, and
    ``f' = f + γ · Σ A V`` (Eq. 2). Compared with :class:`arml.ars.CrissCrossAttention` (``recipe="paper"``).
    """
    cases = []
    for seed, (b, c, h, w) in enumerate([(2, 8, 5, 6), (1, 16, 4, 4), (1, 8, 3, 7)]):
        cca = _seeded(seed, lambda c=c: CrissCrossAttention(c, reduction=4))
        f = torch.randn(b, c, h, w, generator=_generator(seed))
        with torch.no_grad():
            cca.gamma.fill_(0.5 + seed)
            q, k, v = cca.query(f), cca.key(f), cca.value(f)
            want = cca(f)
        cases.append(((f, q, k, v, cca.gamma.item()), want))
    mistakes = [
        ("you returned f unchanged: add γ times the aggregated values (Eq. 2)", lambda f, q, k, v, g: f),
        (
            "you returned only γ·context: Eq. (2) adds it to f (f' = f + γ·context)",
            lambda f, q, k, v, g: _cca_variant(f, q, k, v, g, residual=False),
        ),
        (
            "you forgot γ: f' = f + γ·context",
            lambda f, q, k, v, g: _cca_variant(f, q, k, v, g, use_gamma=False),
        ),
        (
            "the position u itself is counted twice (once in its column, once in its row): mask it out of the "
            "column energies with −inf so that there are H + W − 1 keys",
            lambda f, q, k, v, g: _cca_variant(f, q, k, v, g, self_once=False),
        ),
        (
            "you normalised the column and the row separately: one softmax over all H + W − 1 keys of a "
            "position (concatenate the column and row energies on the last axis first)",
            lambda f, q, k, v, g: _cca_variant(f, q, k, v, g, joint=False),
        ),
        (
            "your softmax runs over the query row i (dim 1), the released code's bug: softmax over the keys, "
            "the last axis of the B×H×W×(H+W−1) energies",
            lambda f, q, k, v, g: _cca_variant(f, q, k, v, g, dim=1),
        ),
    ]
    return run_cases(
        "check_cca",
        fn,
        cases,
        mistakes,
        tip="Check the einsum indices: energy_col[b,i,j,k] = Σ_c q[b,c,i,j]·k[b,c,k,j], energy_row[b,i,j,l] = "
        "Σ_c q[b,c,i,j]·k[b,c,i,l].",
    )


def _amm(f, mlp, conv, lam, channel=True, spatial=True, sign=-1.0, pool="maxmean", gate_only=False):
    """The released AMM with one of the usual mistakes switched on (for the hints)."""
    gate = lambda x: lam * torch.exp(sign * lam * x)  # noqa: E731
    x = f * gate(mlp(f.mean(dim=(2, 3))))[:, :, None, None] if channel else f
    if pool == "maxmean":
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
    else:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    s = gate(conv(pooled))
    if gate_only:
        return s
    return x * s if spatial else x


def check_reactivation(fn: Callable) -> bool:
    """Exercise 02.2: ``fn(f, mlp, conv, lam)`` is reactivation, Eq. (3), as the released code computes it.

    ``f``: ``B×C×H×W`` features ``f'``; ``mlp``: the channel MLP (``C → C``, applied to ``B×C`` vectors);
    ``conv``: the 7×7 convolution ``2 → 1`` channels; ``lam``: λ. With ``E_λ(x) = λ e^{−λx}``: a channel gate
    ``E_λ(mlp(GAP(f)))`` multiplies ``f`` into ``f_c``, then a spatial gate ``E_λ(conv([max_c f_c; mean_c f_c]))``
    multiplies ``f_c`` into ``f''``. Compared with :class:`arml.ars.Reactivation` (``variant="code"``).
    """
    cases = []
    for seed, (b, c, h, w, lam) in enumerate([(2, 8, 6, 5, 0.8), (1, 16, 4, 4, 0.5)]):
        react = _seeded(seed, lambda c=c, lam=lam: Reactivation(c, variant="code", lam=lam))
        f = torch.rand(b, c, h, w, generator=_generator(seed)) * 2
        with torch.no_grad():
            want = react(f)
        cases.append(((f, react.channel_mlp, react.spatial_conv, lam), want))

    def wrong(**kw):
        def answer(f, mlp, conv, lam):
            with torch.no_grad():
                return _amm(f, mlp, conv, lam, **kw)

        return answer

    mistakes = [
        (
            "you returned f' unchanged: multiply it by both gates, channel then spatial",
            lambda f, mlp, conv, lam: f,
        ),
        (
            "E is λ·e^{−λx}: your exponent has the wrong sign (e^{+λx} amplifies the strongest responses)",
            wrong(sign=1.0),
        ),
        ("you applied only the channel gate: multiply f_c by the spatial gate as well", wrong(spatial=False)),
        (
            "you applied only the spatial gate: first multiply f by the channel gate E_λ(mlp(GAP(f)))",
            wrong(channel=False),
        ),
        (
            "the spatial gate's input is [max; mean] over channels, in that order (max first)",
            wrong(pool="meanmax"),
        ),
        ("you returned the spatial gate itself: return f_c times the gate", wrong(gate_only=True)),
    ]
    return run_cases(
        "check_reactivation",
        fn,
        cases,
        mistakes,
        tip="Expected: a = mlp(f.mean(dim=(2, 3))); f_c = f · λe^{−λa} (per channel); "
        "s = conv(cat[max_c f_c, mean_c f_c]); f'' = f_c · λe^{−λs}.",
    )


# ----------------------------------------------------------------------------------------------- notebook 03


def check_iou(fn: Callable) -> bool:
    """Exercise 03.1: ``fn(pred, truth, num_classes)`` gives the per-class IoU of the paper's protocol.

    ``pred``, ``truth``: ``N×H×W`` integer arrays (0..K−1 tissue, 4 background). One count over all images;
    pixels whose *truth* is 4 are not scored; a tissue pixel predicted 4 is a miss (a false negative of its
    class, no class's false positive). ``IoU_c = TP / (TP + FP + FN)``, NaN for a class in neither mask.
    Returns ``K`` numbers. Compared with :func:`arml.analysis.score_masks` (``["iou"]``).
    """
    cases = []
    for seed, n in enumerate([3, 5]):
        rng = np.random.default_rng(seed)
        truth = rng.choice([0, 1, 2, 4], size=(n, 12, 12), p=[0.4, 0.25, 0.2, 0.15]).astype(np.int64)
        pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.choice([0, 1, 2, 4], size=truth.shape))
        pred[truth == 4] = rng.choice(
            [0, 1, 2], size=int((truth == 4).sum())
        )  # predictions on glass: not scored
        pred[0, :3, :3] = 2  # one image where class 2 is over-predicted, so images differ
        cases.append(((pred, truth, 4), score_masks(pred, truth, 4)["iou"]))

    def iou_from(pred, truth, k, keep, pooled=True):
        ious = []
        for c in range(k):
            p, t = (pred == c) & keep, (truth == c) & keep
            inter, union = (p & t).sum(), (p | t).sum()
            ious.append(inter / union if union else np.nan)
        return np.array(ious, dtype=np.float64)

    def per_image(pred, truth, k):
        with warnings.catch_warnings():  # a class in no image: NaN, as the reference
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean([iou_from(p, t, k, t != 4) for p, t in zip(pred, truth, strict=True)], axis=0)

    mistakes = [
        (
            "pixels whose truth is 4 (background) must not be scored: keep only truth < 4",
            lambda p, t, k: iou_from(p, t, k, np.ones_like(t, dtype=bool)),
        ),
        (
            "a tissue pixel predicted 4 is a miss for its true class, so it stays in the count (drop only "
            "truth-4 pixels, not pred-4 ones)",
            lambda p, t, k: iou_from(p, t, k, (t != 4) & (p != 4)),
        ),
        (
            "you averaged per-image IoUs: the paper counts TP, FP and FN over all images first, then divides",
            per_image,
        ),
        (
            "return one IoU per class (K numbers), not the mean",
            lambda p, t, k: np.nanmean(score_masks(p, t, k)["iou"]),
        ),
    ]
    return run_cases(
        "check_iou",
        fn,
        cases,
        mistakes,
        tip="Expected, per class c over the pixels with truth < 4: TP = pred==c & truth==c, FP = pred==c & "
        "truth!=c, FN = truth==c & pred!=c, IoU = TP / (TP + FP + FN).",
    )
