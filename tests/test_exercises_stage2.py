"""arml.exercises.stage2: every check passes on the notebooks' solutions, fails with a hint on the student stub,
and names the mistake of a plausible wrong answer. The solutions below are the code of the ``solution`` cells of
notebooks 04–07 (same lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION``)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from arml.exercises import stage2
from arml.exercises.stage2 import (
    check_angle_cosines,
    check_difference_ci,
    check_normalized_distances,
    check_pointwise_loss,
    check_structure_loss,
    check_swv,
    check_wrong_fraction,
)


# ------------------------------------------------------------------ the solutions of the notebooks' cells
def my_swv(logits, peer1, peer2, target, omega, normalize="weights"):
    valid = target != 255
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    agree = peer1.detach().argmax(dim=1) == peer2.detach().argmax(dim=1)
    w = torch.where(agree, omega, 1 / omega) * valid
    return (w * ce).sum() / (w.sum() if normalize == "weights" else valid.sum())


def my_pointwise(logits, peer1, peer2):
    prob = logits.softmax(dim=1)
    terms = [torch.linalg.vector_norm(prob - p.detach().softmax(dim=1), dim=1).mean() for p in (peer1, peer2)]
    return 0.5 * (terms[0] + terms[1])


def my_distances(e):
    d = (e.unsqueeze(0) - e.unsqueeze(1)).norm(dim=2)
    off = ~torch.eye(len(e), dtype=torch.bool)
    return d / d[off].mean()


def my_angles(e):
    unit = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), dim=2)
    return unit @ unit.transpose(1, 2)


def my_structure_loss(logits, peer1, peer2, alpha=30.0, beta=60.0):
    s = logits.flatten(1)
    terms = []
    for peer in (peer1, peer2):
        t = peer.detach().flatten(1)
        dist = F.smooth_l1_loss(my_distances(s), my_distances(t))
        ang = F.smooth_l1_loss(my_angles(s), my_angles(t))
        terms.append(alpha * dist + beta * ang)
    return 0.5 * (terms[0] + terms[1])


def my_difference_ci(a, b, level=0.95):
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = scipy.stats.t.ppf((1 + level) / 2, df) * se
    diff = np.mean(a) - np.mean(b)
    return diff, diff - half, diff + half


def my_wrong_fraction(masks, truths):
    wrong = tissue = 0
    for mask, truth in zip(masks, truths, strict=True):
        keep = truth != 4
        wrong += int((mask[keep] != truth[keep]).sum())
        tissue += int(keep.sum())
    return wrong / tissue


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise: write your code here")


# ------------------------------------------------------------------ plausible wrong answers
def swv_by_pixels_always(logits, peer1, peer2, target, omega, normalize="weights"):
    return my_swv(logits, peer1, peer2, target, omega, "pixels")


def swv_swapped(logits, peer1, peer2, target, omega, normalize="weights"):
    return my_swv(logits, peer1, peer2, target, 1 / omega, normalize)


def pointwise_squared(logits, peer1, peer2):
    prob = logits.softmax(dim=1)
    terms = [((prob - p.softmax(dim=1)) ** 2).sum(dim=1).mean() for p in (peer1, peer2)]
    return 0.5 * (terms[0] + terms[1])


def pointwise_not_detached(logits, peer1, peer2):
    prob = logits.softmax(dim=1)
    terms = [torch.linalg.vector_norm(prob - p.softmax(dim=1), dim=1).mean() for p in (peer1, peer2)]
    return 0.5 * (terms[0] + terms[1])


def distances_mean_with_diagonal(e):
    d = (e.unsqueeze(0) - e.unsqueeze(1)).norm(dim=2)
    return d / d.mean()


def angles_not_unit(e):
    diff = e.unsqueeze(0) - e.unsqueeze(1)
    return diff @ diff.transpose(1, 2)


def angles_divide_by_norms(e):
    diff = e.unsqueeze(0) - e.unsqueeze(1)
    unit = diff / diff.norm(dim=2, keepdim=True)  # 0/0 where i = k
    return unit @ unit.transpose(1, 2)


def structure_not_detached(logits, peer1, peer2, alpha=30.0, beta=60.0):
    s = logits.flatten(1)
    terms = []
    for peer in (peer1, peer2):
        t = peer.flatten(1)  # no .detach(): the teachers would learn from the student
        terms.append(alpha * F.smooth_l1_loss(my_distances(s), my_distances(t)))
        terms[-1] = terms[-1] + beta * F.smooth_l1_loss(my_angles(s), my_angles(t))
    return 0.5 * (terms[0] + terms[1])


def structure_mse(logits, peer1, peer2, alpha=30.0, beta=60.0):
    s = logits.flatten(1)
    terms = []
    for peer in (peer1, peer2):
        t = peer.detach().flatten(1)
        terms.append(
            alpha * F.mse_loss(my_distances(s), my_distances(t))
            + beta * F.mse_loss(my_angles(s), my_angles(t))
        )
    return 0.5 * (terms[0] + terms[1])


def structure_summed(logits, peer1, peer2, alpha=30.0, beta=60.0):
    return 2 * my_structure_loss(logits, peer1, peer2, alpha, beta)


def ci_normal(a, b, level=0.95):
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    half = scipy.stats.norm.ppf((1 + level) / 2) * se
    diff = np.mean(a) - np.mean(b)
    return diff, diff - half, diff + half


def ci_student_df(a, b, level=0.95):
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    half = scipy.stats.t.ppf((1 + level) / 2, len(a) + len(b) - 2) * se
    diff = np.mean(a) - np.mean(b)
    return {"diff": diff, "low": diff - half, "high": diff + half}


def wrong_fraction_per_mask(masks, truths):
    return float(np.mean([my_wrong_fraction([m], [t]) for m, t in zip(masks, truths, strict=True)]))


def wrong_fraction_with_background(masks, truths):
    return sum(int((m != t).sum()) for m, t in zip(masks, truths, strict=True)) / sum(t.size for t in truths)


CASES = [
    (
        check_swv,
        my_swv,
        [(swv_by_pixels_always, "normalised by pixels instead of weights"), (swv_swapped, "swapped")],
    ),
    (
        check_pointwise_loss,
        my_pointwise,
        [(pointwise_squared, "not its square"), (pointwise_not_detached, "detach")],
    ),
    (check_normalized_distances, my_distances, [(distances_mean_with_diagonal, "diagonal must not count")]),
    (check_angle_cosines, my_angles, [(angles_not_unit, "unit length"), (angles_divide_by_norms, "NaN")]),
    (
        check_structure_loss,
        my_structure_loss,
        [(structure_not_detached, "detach the teachers"), (structure_mse, "Huber"), (structure_summed, "½")],
    ),
    (check_difference_ci, my_difference_ci, [(ci_normal, "1.96"), (ci_student_df, "n_a + n_b − 2")]),
    (
        check_wrong_fraction,
        my_wrong_fraction,
        [(wrong_fraction_per_mask, "pool"), (wrong_fraction_with_background, "background")],
    ),
]


@pytest.mark.parametrize("check, solution, wrong", CASES, ids=[c[0].__name__ for c in CASES])
def test_passes_on_solution_fails_on_stub_and_names_the_mistake(capsys, check, solution, wrong):
    assert check(solution) is True
    assert capsys.readouterr().out == f"✓ {check.__name__}: passed\n"
    assert check(stub) is False
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {check.__name__}: ") and "not implemented yet" in out
    for answer, hint in wrong:
        assert check(answer) is False, answer.__name__
        out = capsys.readouterr().out
        assert out.startswith(f"✗ {check.__name__}: ") and hint in out, (answer.__name__, out)


def test_every_check_is_exported_and_survives_garbage(capsys):
    assert sorted(stage2.__all__) == sorted(n for n in dir(stage2) if n.startswith("check_"))
    for name in stage2.__all__:
        assert getattr(stage2, name)(lambda *a, **k: "nonsense") is False
        assert "✗" in capsys.readouterr().out


def test_wrong_shape_and_unknown_errors_are_reported(capsys):
    assert check_normalized_distances(lambda e: e @ e.t() @ e) is False
    assert "wrong shape: expected (5, 5)" in capsys.readouterr().out
    assert check_swv(lambda a, b, c, m, omega, normalize: my_swv(a, b, c, m, omega, normalize) * 1.1) is False
    assert "expected" in capsys.readouterr().out
    assert check_swv(lambda *args: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_structure_loss_must_stay_connected_to_the_student(capsys):
    assert check_structure_loss(lambda *args: my_structure_loss(*args).detach()) is False
    assert "no gradient reaches the student" in capsys.readouterr().out


NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
PRELUDE = """
import math
import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
from arml.exercises.stage2 import *
from arml.losses import angle_cosines, normalized_distances, structure_loss, swv_loss
"""


@pytest.mark.parametrize(
    "stem, checks",
    [
        ("04_swv_omega_sweep", ["check_swv"]),
        ("05_srm_loss_comparison", ["check_pointwise_loss", "check_structure_loss"]),
        ("06_final_benchmark", ["check_difference_ci"]),
        ("07_noise_lab", ["check_wrong_fraction"]),
    ],
)
def test_the_notebooks_solution_cells_pass_their_checks(capsys, stem, checks):
    """The code of every ``solution`` code cell (with the worked example it builds on) passes its check."""
    cells = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())["cells"]
    namespace: dict = {}
    exec(PRELUDE, namespace)
    for cell in cells:
        source = "".join(cell["source"])
        solution = "solution" in cell["metadata"].get("tags", [])
        if cell["cell_type"] == "code" and (solution or "def rkd_" in source):
            assert not solution or ("### BEGIN SOLUTION" in source and "### END SOLUTION" in source)
            exec(source, namespace)
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line[:1] in "✓✗"] == [f"✓ {c}" for c in checks]
