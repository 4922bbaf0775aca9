"""Self-checks for the stage-2 exercises of notebooks 04–07: SWV (Eq. 4), SRM (Eq. 5–8), statistics and noise.

Every ``check_*(fn)`` runs the student's ``fn`` and ``arml``'s reference on a few seeded random inputs, prints
``✓ name: passed`` or ``✗ name: hint`` and returns a bool; it never raises. When the answer is wrong, the check
recomputes the usual mistakes (normalised by pixels instead of weights, teachers not detached, …) and names the
one that matches, so the hint says *what* went wrong, not only *that* it did.

>>> from arml.losses import swv_loss
>>> check_swv(lambda a, b, c, m, omega, normalize: swv_loss(a, b, c, m, omega, normalize=normalize))
✓ check_swv: passed
True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from arml.datasets import BACKGROUND, IGNORE_INDEX
from arml.exercises._core import attempt, report
from arml.losses import angle_cosines, normalized_distances, pointwise_loss, structure_loss, swv_loss
from arml.noise import wrong_fraction
from arml.stats import difference_ci

__all__ = [
    "check_angle_cosines",
    "check_difference_ci",
    "check_normalized_distances",
    "check_pointwise_loss",
    "check_structure_loss",
    "check_swv",
    "check_wrong_fraction",
]

SEEDS = (0, 1, 2)


def _scalar(value, name: str = "your function") -> tuple[float | None, str | None]:
    """``value`` as a float if it is a number or a one-element tensor, else a hint."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            return None, f"{name} must return a scalar (a 0-d tensor), got shape {tuple(value.shape)}"
        return float(value.detach()), None
    if isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool):
        return float(value), None
    return None, f"{name} must return a number or a 0-d tensor, got {type(value).__name__}"


def _close(got: float, want: float, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    return math.isfinite(got) and abs(got - want) <= atol + rtol * abs(want)


def _diagnose(got: float, mistakes: dict[str, float], fallback: str) -> str:
    """The hint of the first mistake whose value ``got`` reproduces, else ``fallback``."""
    for hint, value in mistakes.items():
        if _close(got, value):
            return hint
    return fallback


def _peers(seed: int, shape: tuple[int, ...], similar: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Logits P_a and two peers that mostly agree with each other (``similar`` scales their shared part)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g)
    shared = torch.randn(shape, generator=g)
    peer1 = similar * shared + 0.5 * torch.randn(shape, generator=g)
    peer2 = similar * shared + 0.5 * torch.randn(shape, generator=g)
    return logits, peer1, peer2


def _grad_reaches(fn: Callable, logits: Tensor, peer1: Tensor, peer2: Tensor) -> str | None:
    """Backpropagate ``fn``'s loss; a hint if no gradient reaches ``logits`` or one reaches a teacher."""
    a, b, c = (x.clone().requires_grad_(True) for x in (logits, peer1, peer2))
    loss, error = attempt(fn, a, b, c)
    if error:
        return error
    if not isinstance(loss, Tensor) or not loss.requires_grad:
        return "no gradient reaches the student's logits: keep the loss a tensor (no .item(), no torch.no_grad())"
    loss.backward()
    if any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in (b, c)):
        return "gradient reaches peer1/peer2: forgot to detach the teachers (use peer.detach())"
    return None


# ------------------------------------------------------------------------------------------- SWV, Eq. (4)
def _swv_inputs(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    logits, peer1, peer2 = _peers(seed, (2, 4, 6, 6))
    g = torch.Generator().manual_seed(100 + seed)
    target = torch.randint(0, 4, (2, 6, 6), generator=g)
    target[torch.rand((2, 6, 6), generator=g) < 0.25] = IGNORE_INDEX
    return logits, peer1, peer2, target


def _swv_mistakes(logits, peer1, peer2, target, omega: float, normalize: str) -> dict[str, float]:
    valid = target != IGNORE_INDEX
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    agree = peer1.argmax(1) == peer2.argmax(1)
    w = torch.where(agree, omega, 1 / omega) * valid
    swapped = torch.where(agree, 1 / omega, omega) * valid
    own_vote = torch.where(logits.argmax(1) == peer1.argmax(1), omega, 1 / omega) * valid
    other = "pixels" if normalize == "weights" else "weights"

    def divided(weights: Tensor, by: str) -> float:
        return float((weights * ce).sum() / (weights.sum() if by == "weights" else valid.sum()))

    all_pixels = torch.where(agree, omega, 1 / omega)
    return {
        f'normalised by {other} instead of {normalize}: normalize="{normalize}" divides by '
        + (
            "the sum of the weights of the valid pixels"
            if normalize == "weights"
            else "the number of valid pixels"
        ): (divided(w, other)),
        "weights swapped: ω where the voters agree, 1/ω where they disagree": divided(swapped, normalize),
        "the voters are peer1 and peer2 (P_b, P_c): P_a, the network being trained, has no vote": divided(
            own_vote, normalize
        ),
        "ignored pixels (target == 255) must count nowhere, not in the denominator either": float(
            (w * ce).sum() / (all_pixels.sum() if normalize == "weights" else target.numel())
        ),
        "Eq. (4) is a sum: divide it as `normalize` says to get a mean": float((w * ce).sum()),
    }


def check_swv(fn: Callable) -> bool:
    """Check an SWV loss, Eq. (4), against :func:`arml.losses.swv_loss` (``ignore_index=255``).

    Args:
        fn: ``fn(logits, peer1, peer2, target, omega, normalize) -> scalar`` with ``B×C×H×W`` logits,
            ``B×H×W`` int64 ``target`` (255 = ignored), ``omega`` in ``[1, ∞)`` and ``normalize`` in
            ``{"weights", "pixels"}``.
    """
    name = "check_swv"
    for seed in SEEDS:
        inputs = _swv_inputs(seed)
        for omega, normalize in ((2.0, "weights"), (5.0, "weights"), (3.0, "pixels")):
            result, error = attempt(fn, *inputs, omega, normalize)
            if error:
                return report(name, False, error)
            got, error = _scalar(result)
            if error:
                return report(name, False, error)
            want = float(swv_loss(*inputs, omega=omega, normalize=normalize))
            if not _close(got, want):
                fallback = f"got {got:.5f}, expected {want:.5f} (ω = {omega:g}, normalize={normalize!r}, seed {seed})"
                return report(name, False, _diagnose(got, _swv_mistakes(*inputs, omega, normalize), fallback))
    logits, peer1, peer2, target = _swv_inputs(0)
    hint = _grad_reaches(lambda a, b, c: fn(a, b, c, target, 2.0, "weights"), logits, peer1, peer2)
    return report(name, hint is None, hint or "")


# ------------------------------------------------------------------------------------------ L_pt, Eq. (5)
def _pointwise_mistakes(logits: Tensor, peer1: Tensor, peer2: Tensor) -> dict[str, float]:
    prob = logits.softmax(1)
    peers = [p.softmax(1) for p in (peer1, peer2)]

    def mean_norm(a: Tensor, b: Tensor, squared: bool = False) -> Tensor:
        diff = torch.linalg.vector_norm(a - b, dim=1)
        return (diff**2 if squared else diff).mean()

    return {
        "take the per-pixel L2 norm, not its square": float(sum(mean_norm(prob, p, True) for p in peers) / 2),
        "the softmax runs over the classes (dim 1), not the batch (dim 0)": float(
            sum(mean_norm(logits.softmax(0), p.softmax(0)) for p in (peer1, peer2)) / 2
        ),
        "compare probabilities (softmax over classes), not raw logits": float(
            sum(mean_norm(logits, p) for p in (peer1, peer2)) / 2
        ),
        "average the two teachers (the ½ of Eq. 5), don't add them": float(
            sum(mean_norm(prob, p) for p in peers)
        ),
        "use both teachers, peer1 and peer2": float(mean_norm(prob, peers[0])),
    }


def check_pointwise_loss(fn: Callable) -> bool:
    """Check a point-wise relation loss L_pt, Eq. (5), against :func:`arml.losses.pointwise_loss`.

    Args:
        fn: ``fn(logits, peer1, peer2) -> scalar`` on ``B×C×H×W`` logits (every pixel counts).
    """
    name = "check_pointwise_loss"
    for seed in SEEDS:
        inputs = _peers(seed, (3, 4, 5, 5))
        result, error = attempt(fn, *inputs)
        got, error = (None, error) if error else _scalar(result)
        if error:
            return report(name, False, error)
        want = float(pointwise_loss(*inputs))
        if not _close(got, want):
            fallback = f"got {got:.5f}, expected {want:.5f} (seed {seed})"
            return report(name, False, _diagnose(got, _pointwise_mistakes(*inputs), fallback))
    hint = _grad_reaches(fn, *_peers(0, (3, 4, 5, 5)))
    return report(name, hint is None, hint or "")


# ----------------------------------------------------------------------------------- RKD relations, Eq. (6–7)
def _embeddings(seed: int, b: int = 5, d: int = 3) -> Tensor:
    return torch.randn((b, d), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _matrix(result, shape: tuple[int, ...]) -> tuple[Tensor | None, str | None]:
    if not isinstance(result, Tensor):
        return None, f"return a tensor of shape {shape}, got {type(result).__name__}"
    if tuple(result.shape) != shape:
        return None, f"wrong shape: expected {shape}, got {tuple(result.shape)}"
    if not bool(torch.isfinite(result).all()):
        return None, (
            "your result has NaN or inf: a zero difference vector (i = k, or the diagonal) must give 0, "
            "not 0/0 (use F.normalize or guard the division)"
        )
    return result.detach().to(torch.float64), None


def _matrix_verdict(
    name: str, got: Tensor, want: Tensor, mistakes: dict[str, Tensor], seed: int
) -> bool | None:
    """None when ``got`` matches ``want``; else the report of the mistake it reproduces."""
    if torch.allclose(got, want, rtol=1e-4, atol=1e-6):
        return None
    for hint, value in mistakes.items():
        if value.shape == got.shape and torch.allclose(got, value, rtol=1e-4, atol=1e-6):
            return report(name, False, hint)
    worst = float((got - want).abs().max())
    return report(name, False, f"values differ from arml's by up to {worst:.3g} (seed {seed})")


def check_normalized_distances(fn: Callable) -> bool:
    """Check the distance relations of L_dist, Eq. (6), against :func:`arml.losses.normalized_distances`.

    Args:
        fn: ``fn(e) -> B×B`` for ``B×D`` embeddings ``e`` (one flattened sample per row): the pairwise
            Euclidean distances divided by the mean of the off-diagonal ones.
    """
    name = "check_normalized_distances"
    for seed in SEEDS:
        e = _embeddings(seed)
        result, error = attempt(fn, e.clone())
        got, error = (None, error) if error else _matrix(result, (len(e), len(e)))
        if error:
            return report(name, False, error)
        d = torch.cdist(e, e)
        off = ~torch.eye(len(e), dtype=torch.bool)
        mistakes = {
            "divide by the mean of the off-diagonal distances (RKD's normalisation, Eq. 6)": d,
            "the mean is over the off-diagonal (positive) distances only: the zero diagonal must not count": d
            / d.mean(),
            "use Euclidean distances, not squared ones": d**2 / (d**2)[off].mean(),
        }
        verdict = _matrix_verdict(name, got, normalized_distances(e), mistakes, seed)
        if verdict is not None:
            return verdict
    return report(name, True)


def check_angle_cosines(fn: Callable) -> bool:
    """Check the angle relations of L_ang, Eq. (7), against :func:`arml.losses.angle_cosines`.

    Args:
        fn: ``fn(e) -> B×B×B`` for ``B×D`` embeddings: ``[k, i, j]`` = cosine of the angle at anchor ``k``
            between ``e_i − e_k`` and ``e_j − e_k``; a zero difference (``i = k``) gives 0.
    """
    name = "check_angle_cosines"
    for seed in SEEDS:
        e = _embeddings(seed)
        result, error = attempt(fn, e.clone())
        b = len(e)
        got, error = (None, error) if error else _matrix(result, (b, b, b))
        if error:
            return report(name, False, error)
        want = angle_cosines(e)
        diff = e.unsqueeze(0) - e.unsqueeze(1)  # [k, i] = e_i - e_k
        mistakes = {
            "index order: the anchor k comes first, [k, i, j]": want.permute(1, 0, 2),
            "normalise the difference vectors to unit length before the inner product": diff
            @ diff.transpose(1, 2),
            "subtract the anchor: the angle is between e_i − e_k and e_j − e_k, not between e_i and e_j": (
                F.normalize(e, dim=1) @ F.normalize(e, dim=1).t()
            ).expand(b, b, b),
        }
        verdict = _matrix_verdict(name, got, want, mistakes, seed)
        if verdict is not None:
            return verdict
    return report(name, True)


# ------------------------------------------------------------------------------------------ L_st, Eq. (8)
def _structure_mistakes(logits: Tensor, peer1: Tensor, peer2: Tensor, alpha: float, beta: float) -> dict:
    def rkd(student: Tensor, teacher: Tensor, a: float, b: float, loss=F.smooth_l1_loss) -> float:
        s, t = student.flatten(1).double(), teacher.flatten(1).double()
        dist = loss(normalized_distances(s), normalized_distances(t))
        ang = loss(angle_cosines(s), angle_cosines(t))
        return float(a * dist + b * ang)

    return {
        "average the two teachers (the ½ of Eq. 8), don't add them": rkd(logits, peer1, alpha, beta)
        + rkd(logits, peer2, alpha, beta),
        "use both teachers: ½·[(α·L_dist + β·L_ang)(P_a, P_b) + (…)(P_a, P_c)]": rkd(
            logits, peer1, alpha, beta
        ),
        "α weighs the distances and β the angles: you swapped them": (
            rkd(logits, peer1, beta, alpha) + rkd(logits, peer2, beta, alpha)
        )
        / 2,
        "compare the relations with the Huber loss F.smooth_l1_loss (β = 1), not the MSE": (
            rkd(logits, peer1, alpha, beta, F.mse_loss) + rkd(logits, peer2, alpha, beta, F.mse_loss)
        )
        / 2,
        "one sample is a whole image: flatten each image's C×H×W logits into one row (x.flatten(1))": float(
            structure_loss(
                logits.transpose(0, 1), peer1.transpose(0, 1), peer2.transpose(0, 1), None, alpha, beta
            )
        ),
    }


def check_structure_loss(fn: Callable) -> bool:
    """Check a structure-wise relation loss L_st, Eq. (8), against :func:`arml.losses.structure_loss`.

    Args:
        fn: ``fn(logits, peer1, peer2, alpha, beta) -> scalar`` on ``B×C×H×W`` logits (every pixel counts;
            a sample is one image's flattened logits; the peers are teachers).
    """
    name = "check_structure_loss"
    for seed in SEEDS:
        logits, peer1, peer2 = _peers(seed, (5, 2, 1, 2), similar=0.3)
        for alpha, beta in ((30.0, 60.0), (1.0, 0.0), (0.0, 1.0)):
            result, error = attempt(fn, logits, peer1, peer2, alpha, beta)
            got, error = (None, error) if error else _scalar(result)
            if error:
                return report(name, False, error)
            want = float(structure_loss(logits, peer1, peer2, None, alpha, beta))
            if not _close(got, want, rtol=1e-3, atol=1e-6):
                fallback = f"got {got:.5f}, expected {want:.5f} (α = {alpha:g}, β = {beta:g}, seed {seed})"
                mistakes = _structure_mistakes(logits, peer1, peer2, alpha, beta)
                return report(name, False, _diagnose(got, mistakes, fallback))
    hint = _grad_reaches(lambda a, b, c: fn(a, b, c, 30.0, 60.0), *_peers(0, (5, 2, 1, 2), similar=0.3))
    return report(name, hint is None, hint or "")


# --------------------------------------------------------------------------------------- statistics (06)
def _welch_mistakes(a: np.ndarray, b: np.ndarray, level: float) -> dict[str, tuple[float, float, float]]:
    from scipy import stats

    diff = a.mean() - b.mean()
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    welch = difference_ci(a, b, level)["df"]
    pooled_var = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    pooled_se = math.sqrt(pooled_var * (1 / a.size + 1 / b.size))
    se0 = math.sqrt(a.var() / a.size + b.var() / b.size)

    def ci(d: float, half: float) -> tuple[float, float, float]:
        return d, d - half, d + half

    t = stats.t.ppf((1 + level) / 2, welch)
    return {
        "the difference is mean(a) − mean(b), not mean(b) − mean(a)": ci(-diff, t * se),
        "with a handful of seeds use Student's t quantile (Welch df), not the normal 1.96": ci(
            diff, stats.norm.ppf((1 + level) / 2) * se
        ),
        "use Welch's df (Welch–Satterthwaite), not n_a + n_b − 2": ci(
            diff, stats.t.ppf((1 + level) / 2, a.size + b.size - 2) * se
        ),
        "Welch's interval does not pool the variances: se = sqrt(s_a²/n_a + s_b²/n_b)": ci(
            diff, stats.t.ppf((1 + level) / 2, a.size + b.size - 2) * pooled_se
        ),
        "use the sample variance (ddof=1), not the population one (np.var's default ddof=0)": ci(
            diff, t * se0
        ),
        "the interval is two-sided: the quantile is t_{(1+level)/2}, not t_{level}": ci(
            diff, stats.t.ppf(level, welch) * se
        ),
    }


def _triple(result) -> tuple[tuple[float, float, float] | None, str | None]:
    if isinstance(result, dict):
        if not {"diff", "low", "high"} <= set(result):
            return None, f"a dict result needs the keys diff, low, high; got {sorted(result)}"
        result = (result["diff"], result["low"], result["high"])
    try:
        diff, low, high = (float(x) for x in result)
    except (TypeError, ValueError):
        return None, f"return (diff, low, high), three numbers; got {result!r}"
    return (diff, low, high), None


def check_difference_ci(fn: Callable) -> bool:
    """Check a Welch confidence interval of a difference of means against :func:`arml.stats.difference_ci`.

    Args:
        fn: ``fn(a, b, level) -> (diff, low, high)`` for two 1-D arrays of per-seed scores (at least 2 each,
            with spread) and a level in (0, 1); ``diff = mean(a) − mean(b)``.
    """
    name = "check_difference_ci"
    rng = np.random.default_rng(0)
    for size_a, size_b, level in ((3, 3, 0.95), (3, 6, 0.95), (5, 2, 0.9)):
        a = rng.normal(0.70, 0.01, size_a)
        b = rng.normal(0.69, 0.03, size_b)
        result, error = attempt(fn, a.copy(), b.copy(), level)
        got, error = (None, error) if error else _triple(result)
        if error:
            return report(name, False, error)
        ref = difference_ci(a, b, level)
        want = (ref["diff"], ref["low"], ref["high"])
        if not all(_close(g, w, rtol=1e-6, atol=1e-9) for g, w in zip(got, want, strict=True)):
            for hint, wrong in _welch_mistakes(a, b, level).items():
                if all(_close(g, w, rtol=1e-6, atol=1e-9) for g, w in zip(got, wrong, strict=True)):
                    return report(name, False, hint)
            shown = ", ".join(f"{x:.4f}" for x in got)
            expected = ", ".join(f"{x:.4f}" for x in want)
            return report(name, False, f"got ({shown}), expected ({expected}) for n = {size_a}, {size_b}")
    return report(name, True)


# -------------------------------------------------------------------------------------------- noise (07)
def _noise_inputs(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Truths with background and masks that are wrong in some tissue and some background pixels."""
    rng = np.random.default_rng(seed)
    truths, masks = [], []
    for side, background in ((6, 0.2), (10, 0.5), (4, 0.0)):
        truth = rng.integers(0, 4, (side, side)).astype(np.uint8)
        truth[rng.random((side, side)) < background] = BACKGROUND
        mask = truth.copy()
        flip = rng.random((side, side)) < 0.3
        mask[flip] = rng.integers(0, 5, int(flip.sum())).astype(np.uint8)
        truths.append(truth)
        masks.append(mask)
    return masks, truths


def check_wrong_fraction(fn: Callable) -> bool:
    """Check the share of wrong tissue pixels against :func:`arml.noise.wrong_fraction`.

    Args:
        fn: ``fn(masks, truths) -> float`` for two lists of ``H×W`` uint8 arrays (classes 0–3, background 4):
            the fraction of tissue pixels (truth 0–3) whose mask differs, pooled over all masks.
    """
    name = "check_wrong_fraction"
    for seed in SEEDS:
        masks, truths = _noise_inputs(seed)
        result, error = attempt(fn, [m.copy() for m in masks], [t.copy() for t in truths])
        got, error = (None, error) if error else _scalar(result)
        if error:
            return report(name, False, error)
        want = wrong_fraction(masks, truths)
        if not _close(got, want, rtol=1e-9, atol=1e-12):
            pooled_all = sum(int((m != t).sum()) for m, t in zip(masks, truths, strict=True))
            mistakes = {
                "return a fraction in [0, 1], not a percentage": 100 * want,
                "that is the share of *correct* tissue pixels": 1 - want,
                "background pixels (truth == 4) never count, wrong or not": pooled_all
                / sum(t.size for t in truths),
                "pool the pixels of all masks (total wrong / total tissue), don't average per-mask fractions": float(
                    np.mean([wrong_fraction(m, t) for m, t in zip(masks, truths, strict=True)])
                ),
                "tissue is decided by the truth (truth != 4), not by the mask": sum(
                    int((m != t)[m != BACKGROUND].sum()) for m, t in zip(masks, truths, strict=True)
                )
                / sum(int((m != BACKGROUND).sum()) for m in masks),
            }
            fallback = f"got {got:.5f}, expected {want:.5f} (seed {seed})"
            return report(name, False, _diagnose(got, mistakes, fallback))
    return report(name, True)
