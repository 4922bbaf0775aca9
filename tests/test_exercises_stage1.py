"""The stage-1 exercise checks (notebooks 01–03): each passes on the notebook's solution, fails with a hint on
a stub and on plausible wrong answers, and never raises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arml.exercises import (
    check_background,
    check_cca,
    check_iou,
    check_normalize_cams,
    check_reactivation,
)

# --- the solutions, the same code as the notebooks' solution cells ----------------------------------------


def normalize_solution(cams):
    lo = cams.amin(dim=(1, 2, 3), keepdim=True)
    hi = cams.amax(dim=(1, 2, 3), keepdim=True)
    return (cams - lo) / (hi - lo + 1e-5)


def background_solution(images, threshold):
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    grey = 255 * (0.299 * r + 0.587 * g + 0.114 * b)
    return grey > threshold


def cca_solution(f, q, k, v, gamma):
    h = f.shape[2]
    e_col = torch.einsum("bcij,bckj->bijk", q, k)
    e_row = torch.einsum("bcij,bcil->bijl", q, k)
    e_col = e_col.masked_fill(torch.eye(h, dtype=torch.bool).view(1, h, 1, h), float("-inf"))
    a = torch.cat([e_col, e_row], dim=-1).softmax(dim=-1)
    context = torch.einsum("bijk,bckj->bcij", a[..., :h], v) + torch.einsum("bijl,bcil->bcij", a[..., h:], v)
    return f + gamma * context


def reactivation_solution(f, mlp, conv, lam):
    channel = lam * torch.exp(-lam * mlp(f.mean(dim=(2, 3))))
    f_c = f * channel[:, :, None, None]
    pooled = torch.cat([f_c.amax(dim=1, keepdim=True), f_c.mean(dim=1, keepdim=True)], dim=1)
    return f_c * lam * torch.exp(-lam * conv(pooled))


def iou_solution(pred, truth, num_classes=4):
    scored = truth < 4
    ious = []
    for c in range(num_classes):
        p, t = (pred == c) & scored, truth == c
        union = (p | t).sum()
        ious.append((p & t).sum() / union if union else np.nan)
    return np.array(ious)


def stub(*args):
    raise NotImplementedError("exercise: write this part")


# --- plausible wrong answers: (name, function, words the hint must contain) -------------------------------


def cca_softmax_per_block(f, q, k, v, gamma):
    h = f.shape[2]
    e_col = torch.einsum("bcij,bckj->bijk", q, k)
    e_col = e_col.masked_fill(torch.eye(h, dtype=torch.bool).view(1, h, 1, h), float("-inf"))
    a_col, a_row = e_col.softmax(-1), torch.einsum("bcij,bcil->bijl", q, k).softmax(-1)
    return f + gamma * (torch.einsum("bijk,bckj->bcij", a_col, v) + torch.einsum("bijl,bcil->bcij", a_row, v))


def cca_softmax_query_row(f, q, k, v, gamma):
    h = f.shape[2]
    e_col = torch.einsum("bcij,bckj->bijk", q, k)
    e_col = e_col.masked_fill(torch.eye(h, dtype=torch.bool).view(1, h, 1, h), float("-inf"))
    a = torch.cat([e_col, torch.einsum("bcij,bcil->bijl", q, k)], dim=-1).softmax(dim=1)
    return f + gamma * (
        torch.einsum("bijk,bckj->bcij", a[..., :h], v) + torch.einsum("bijl,bcil->bcij", a[..., h:], v)
    )


def cca_transposed_keys(f, q, k, v, gamma):  # a wrong einsum: not one of the known mistakes
    return cca_solution(f, q, k.flip(-1), v, gamma)


def _amm(f, mlp, conv, lam, sign):
    f_c = f * lam * torch.exp(sign * lam * mlp(f.mean(dim=(2, 3))))[:, :, None, None]
    pooled = torch.cat([f_c.amax(dim=1, keepdim=True), f_c.mean(dim=1, keepdim=True)], dim=1)
    return f_c * lam * torch.exp(sign * lam * conv(pooled))


def exp_plus(f, mlp, conv, lam):  # e^{+λx}: a known mistake
    return _amm(f, mlp, conv, lam, sign=1.0)


def no_lambda_factor(f, mlp, conv, lam):  # e^{−λx} without the λ in front: not a known mistake
    return _amm(f, mlp, conv, lam, sign=-1.0) / lam**2


def iou_all_pixels(pred, truth, num_classes):  # truth-4 pixels scored as well
    out = []
    for c in range(num_classes):
        p, t = pred == c, truth == c
        union = (p | t).sum()
        out.append((p & t).sum() / union if union else np.nan)
    return np.array(out)


WRONG = {
    "normalize": [
        (lambda c: normalize_solution(c.transpose(0, 1)).transpose(0, 1), "values differ"),
        (
            lambda c: (
                (c - c.amin(dim=(2, 3), keepdim=True))
                / (c.amax(dim=(2, 3), keepdim=True) - c.amin(dim=(2, 3), keepdim=True) + 1e-5)
            ),
            "each class map on its own",
        ),
        (lambda c: (c - c.min()) / (c.max() - c.min() + 1e-5), "whole batch"),
    ],
    "background": [
        (lambda im, t: 255 * im.mean(dim=1) > t, "averaged R, G and B"),
        (lambda im, t: (0.299 * im[:, 0] + 0.587 * im[:, 1] + 0.114 * im[:, 2]) > t, "multiply by 255"),
        (lambda im, t: 255 * (0.299 * im[:, 0] + 0.587 * im[:, 1] + 0.114 * im[:, 2]) < t, "opposite"),
        (lambda im, t: (255 * im[:, 1] > t)[:, None], "shape"),
    ],
    "cca": [
        (cca_softmax_per_block, "column and the row separately"),
        (cca_softmax_query_row, "query row"),
        (lambda f, q, k, v, g: cca_solution(f, q, k, v, g) - f, "only γ·context"),
        (cca_transposed_keys, "values differ"),
    ],
    "reactivation": [
        (no_lambda_factor, "values differ"),
        (exp_plus, "wrong sign"),
        (
            lambda f, mlp, conv, lam: f * lam * torch.exp(-lam * mlp(f.mean(dim=(2, 3))))[:, :, None, None],
            "only the channel gate",
        ),
    ],
    "iou": [
        (iou_all_pixels, "must not be scored"),
        (lambda p, t, k: np.nanmean(iou_solution(p, t, k)), "one IoU per class"),
        (lambda p, t, k: np.nan_to_num(iou_solution(p, t, k)), "NaN"),
    ],
}


CHECKS = {
    "normalize": (check_normalize_cams, normalize_solution),
    "background": (check_background, background_solution),
    "cca": (check_cca, cca_solution),
    "reactivation": (check_reactivation, reactivation_solution),
    "iou": (check_iou, iou_solution),
}


@pytest.mark.parametrize("name", CHECKS)
def test_check_passes_on_the_solution(name, capsys):
    check, solution = CHECKS[name]
    assert check(solution) is True
    assert capsys.readouterr().out.startswith(f"✓ {check.__name__}: passed")


@pytest.mark.parametrize("name", CHECKS)
def test_check_fails_on_a_stub_with_a_hint(name, capsys):
    check, _ = CHECKS[name]
    assert check(stub) is False
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {check.__name__}:") and "not implemented yet" in out


@pytest.mark.parametrize(
    ("name", "case"), [(n, i) for n, wrongs in WRONG.items() for i in range(len(wrongs))]
)
def test_check_fails_on_a_wrong_answer_with_a_hint(name, case, capsys):
    check, _ = CHECKS[name]
    wrong, words = WRONG[name][case]
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {check.__name__}:")
    assert words in out, out


def test_checks_never_raise_and_report_errors_and_bad_returns(capsys):
    assert check_cca(lambda *a: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
    assert check_iou(lambda *a: None) is False
    assert "forget the `return`" in capsys.readouterr().out
    assert check_background("not a function") is False
    assert "pass your function itself" in capsys.readouterr().out


def test_checks_do_not_let_in_place_changes_spoil_the_reference(capsys):
    def in_place(f, q, k, v, gamma):
        out = cca_solution(f, q, k, v, gamma)
        f.zero_()  # a student who overwrites an input must still be judged on the returned value
        return out

    assert check_cca(in_place) is True


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_cca(cca_solution)
    check_reactivation(reactivation_solution)
    assert torch.equal(torch.rand(3), expected)
