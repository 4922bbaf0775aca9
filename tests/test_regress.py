"""arml.regress: deterministic numbers exactly, stage-2 scores within a band measured from the seeds."""

import json
import math

import pytest

from arml import regress


def _write(folder, stem, payload):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(payload))


def _final(miou=0.40, per_seed=(0.38, 0.40, 0.42), extra=None):
    row = {"miou": miou, "miou_std": 0.02, "n_seeds": 3, "per_seed": list(per_seed)}
    return {
        "seeds": [0, 1, 2],
        "elapsed_s": 100.0,
        "ablation": {"baseline": row, "full": dict(row)},
        **(extra or {}),
    }


def test_band_is_k_sigma_root_two_over_n_with_a_floor():
    assert regress.band(0.02, 3) == pytest.approx(3 * 0.02 * math.sqrt(2 / 3))
    assert regress.band(0.0, 3) == regress.FLOOR
    assert regress.seed_sigma(_final()) == pytest.approx(0.02)


def test_identical_results_pass_and_timings_are_skipped(tmp_path):
    _write(tmp_path / "ref", "06_final_benchmark", _final())
    _write(tmp_path / "new", "06_final_benchmark", {**_final(), "elapsed_s": 5.0})
    report = regress.compare(tmp_path / "ref", tmp_path / "new")
    assert report["failures"] == []
    assert report["checked"]["band"] == 2 * (1 + 3)  # two rows: the mean and three per-seed values
    assert report["skipped"] >= 1


def test_stage2_score_inside_the_band_passes_outside_fails(tmp_path):
    tol = regress.band(0.02, 3)
    _write(tmp_path / "ref", "06_final_benchmark", _final())
    _write(tmp_path / "ok", "06_final_benchmark", _final(miou=0.40 + 0.9 * tol))
    _write(tmp_path / "bad", "06_final_benchmark", _final(miou=0.40 + 1.1 * tol))
    assert regress.compare(tmp_path / "ref", tmp_path / "ok")["failures"] == []
    failures = regress.compare(tmp_path / "ref", tmp_path / "bad")["failures"]
    assert len(failures) == 2 and "ablation/baseline/miou" in failures[0] and "outside" in failures[0]


def test_deterministic_numbers_must_match(tmp_path):
    for folder, value in (("ref", 0.5291), ("same", 0.5291), ("moved", 0.5292)):
        _write(tmp_path / folder, "06_final_benchmark", _final())
        _write(tmp_path / folder, "01_cam_baselines", {"seeds": [0], "methods": {"gradcam": {"miou": value}}})
    assert regress.compare(tmp_path / "ref", tmp_path / "same")["failures"] == []
    failures = regress.compare(tmp_path / "ref", tmp_path / "moved")["failures"]
    assert failures == ["01_cam_baselines:methods/gradcam/miou: 0.5292 != 0.5291 (deterministic)"]


def test_pseudo_mask_scores_in_stage2_files_are_exact(tmp_path):
    _write(tmp_path / "ref", "06_final_benchmark", _final(extra={"pseudo_mask_miou": {"ars": 0.68}}))
    _write(tmp_path / "new", "06_final_benchmark", _final(extra={"pseudo_mask_miou": {"ars": 0.6801}}))
    assert len(regress.compare(tmp_path / "ref", tmp_path / "new")["failures"]) == 1


def test_missing_file_or_number_fails_and_main_exit_codes(tmp_path, capsys):
    _write(tmp_path / "ref", "06_final_benchmark", _final())
    _write(
        tmp_path / "ref", "04_swv_omega_sweep", {"seeds": [0], "omega": {"2": {"miou": 0.4, "n_seeds": 1}}}
    )
    _write(tmp_path / "new", "06_final_benchmark", _final())
    assert regress.main([str(tmp_path / "ref"), str(tmp_path / "new")]) == 1
    assert "04_swv_omega_sweep: missing" in capsys.readouterr().out
    _write(tmp_path / "new", "04_swv_omega_sweep", {"seeds": [0], "omega": {"2": {}}})
    assert any("omega/2/miou" in f for f in regress.compare(tmp_path / "ref", tmp_path / "new")["failures"])
    assert regress.main([str(tmp_path / "ref")]) == 2
    with pytest.raises(FileNotFoundError, match="no reference results"):
        regress.compare(tmp_path / "empty", tmp_path / "new")


def test_the_papers_tables_are_not_results_of_the_run(tmp_path):
    paper = {"paper_table2": {"full": {"miou": 0.7056, "miou_std": 0.0019, "n_seeds": 3}}}
    _write(tmp_path / "ref", "06_final_benchmark", _final(extra=paper))
    _write(tmp_path / "new", "06_final_benchmark", _final())  # an older run without the paper's table
    report = regress.compare(tmp_path / "ref", tmp_path / "new")
    assert report["failures"] == [] and report["checked"]["band"] == 2 * (1 + 3)
    assert regress._kind("06_final_benchmark", ("paper_table2", "full", "miou")) == "skip"
    assert regress._kind("06_final_benchmark", ("ablation", "full", "miou")) == "band"
