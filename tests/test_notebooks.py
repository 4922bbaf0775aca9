"""Execute all seven notebooks on the quick profile with papermill and check what they write.

The run uses private data/runs folders (``ARML_DATA``, ``ARML_RUNS``), so nothing cached by an older
version of the code is reused. Results are compared with ``tests/regression/quick.json`` within the
tolerances stored in that file (seeded CPU runs; small differences come from thread counts and BLAS).
Regenerate the baseline after an intended change with ``ARML_UPDATE_REGRESSION=1 make test``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from arml.reproduce import NOTEBOOKS, run_notebooks

BASELINE = Path(__file__).parent / "regression" / "quick.json"
KEYS = {
    "01_cam_baselines": "methods",
    "02_ars_ablation": "variants",
    "03_pseudo_mask_quality": "pseudo_masks",
    "04_swv_omega_sweep": "omega",
    "05_srm_loss_comparison": "relation",
    "06_final_benchmark": "ablation",
    "07_noise_lab": "noise",
}
EXPECTED_ENTRIES = {
    "omega": {"N/A", "1", "2", "3", "5", "inf"},
    "relation": {"CE", "KL", "CRL", "L_pt", "L_st"},
}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    saved = {k: os.environ.get(k) for k in ("ARML_DATA", "ARML_RUNS", "ARML_PROFILE")}
    os.environ.update({"ARML_DATA": str(out / "data"), "ARML_RUNS": str(out / "runs")})
    os.environ.pop("ARML_PROFILE", None)
    try:
        runs = run_notebooks("quick", out=out, progress=False)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return out, runs


def _mious(results: dict) -> dict[str, float]:
    """Every ``miou`` in a results payload, keyed by its path (``omega/2``)."""
    found = {}

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if not path and str(key).startswith("paper_"):  # the paper's constants, not this run's scores
                    continue
                if key == "miou" and isinstance(value, (int, float)):
                    found["/".join(path) or "miou"] = float(value)
                else:
                    walk(value, [*path, str(key)])
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, [*path, str(i)])

    walk(results, [])
    return found


def test_all_notebooks_ran(executed):
    out, runs = executed
    assert [r.stem for r in runs] == list(NOTEBOOKS)
    assert all(r.ok for r in runs), [r.error for r in runs if not r.ok]
    for stem in NOTEBOOKS:
        assert (out / "notebooks" / f"{stem}.ipynb").exists()


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_results_are_present_finite_and_in_range(executed, stem):
    out, _ = executed
    results = json.loads((out / "results" / f"{stem}.json").read_text())
    for key in ("profile", "dataset", "seeds", "elapsed_s", "headline", KEYS[stem]):
        assert key in results, f"{stem}: missing {key}"
    assert results["profile"] == "quick"
    entries = results[KEYS[stem]]
    assert entries, f"{stem}: empty {KEYS[stem]}"
    if KEYS[stem] in EXPECTED_ENTRIES:
        assert set(entries) == EXPECTED_ENTRIES[KEYS[stem]]
    mious = _mious(entries)
    assert mious, f"{stem}: no miou values"
    for path, value in mious.items():
        assert math.isfinite(value) and 0.0 <= value <= 1.0, f"{stem}: {path} = {value}"
    assert list((out / "figures").glob(f"{stem}_*.png")), f"{stem}: no figures"


def test_results_match_the_regression_baseline(executed):
    out, _ = executed
    current = {stem: _mious(json.loads((out / "results" / f"{stem}.json").read_text())) for stem in NOTEBOOKS}
    if os.environ.get("ARML_UPDATE_REGRESSION") == "1" or not BASELINE.exists():
        BASELINE.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "tolerance_abs": 0.03,
            "note": "quick profile, seeded CPU runs; mIoU fractions",
            "miou": current,
        }
        BASELINE.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"baseline written to {BASELINE}; commit it")
    baseline = json.loads(BASELINE.read_text())
    tol = baseline["tolerance_abs"]
    problems = []
    for stem, values in baseline["miou"].items():
        for path, expected in values.items():
            got = current.get(stem, {}).get(path)
            if got is None or abs(got - expected) > tol:
                problems.append(f"{stem} {path}: expected {expected:.4f} ± {tol}, got {got}")
    assert not problems, "\n".join(problems)
