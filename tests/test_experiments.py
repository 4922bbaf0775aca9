import json
import math

import nbformat
import numpy as np
import pytest

from arml.experiments import config_hash, mean_std, notebook_setup, save_results, ttest
from arml.profiles import PROFILES, get_profile
from arml.reproduce import (
    NOTEBOOK_DIR,
    NOTEBOOKS,
    NotebookRun,
    changed_parameters,
    select,
    strip_noise,
    summary_table,
    without_injected_cells,
)
from arml.runtime import to_jsonable


def test_config_hash_ignores_runtime_fields_only():
    a = {"lr": 0.1, "progress": True, "device": "cpu", "data_root": "/x"}
    b = {"lr": 0.1, "progress": False, "device": "cuda", "data_root": "/y"}
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash({**a, "lr": 0.2})


def test_to_jsonable_and_save_results(tmp_path):
    payload = {"miou": np.float64(0.5), "iou": np.array([0.1, np.nan]), "t": (1, 2), "inf": math.inf}
    assert to_jsonable(payload) == {"miou": 0.5, "iou": [0.1, None], "t": [1, 2], "inf": None}
    path = save_results("demo", payload, tmp_path)
    assert json.loads(path.read_text())["iou"] == [0.1, None]


def test_mean_std_and_ttest():
    assert mean_std([0.5, 0.7]) == {
        "mean": pytest.approx(0.6),
        "std": pytest.approx(0.1414, abs=1e-4),
        "n": 2,
    }
    assert mean_std([0.5])["std"] == 0.0 and mean_std([None])["n"] == 0
    assert ttest([0.1, 0.11, 0.12], [0.5, 0.51, 0.52]) < 0.001
    assert math.isnan(ttest([0.1], [0.2, 0.3]))
    assert math.isnan(ttest([], [0.1, 0.2]))  # an empty group: NaN, not an exception


def test_profiles_and_env_override(monkeypatch):
    assert set(PROFILES) == {"quick", "cpu", "paper", "paper-smoke"}
    assert get_profile("paper").cls["backbone"] == "resnet38d"
    monkeypatch.setenv("ARML_PROFILE", "quick")
    assert get_profile().name == "quick"
    with pytest.raises(ValueError, match="quick"):
        get_profile("laptop")


def test_notebook_setup_fails_early_on_bad_parameters(tmp_path, monkeypatch):
    monkeypatch.delenv("ARML_PROFILE", raising=False)
    with pytest.raises(ValueError, match="unknown profile"):
        notebook_setup("huge")
    with pytest.raises(FileNotFoundError, match="DATA_ROOT"):
        notebook_setup("quick", data_root=str(tmp_path / "absent"))
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="arml data check"):
        notebook_setup("quick", data_root=str(tmp_path), progress=False)


def test_select_notebooks():
    assert select(None) == list(NOTEBOOKS)
    assert select("01,4") == ["01_cam_baselines", "04_swv_omega_sweep"]
    assert select("06_final_benchmark") == ["06_final_benchmark"]
    with pytest.raises(ValueError, match="choose from"):
        select("09")


def test_strip_noise_and_summary(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"duration": 1.0}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    cell = nbformat.v4.new_code_cell("1")
    cell.metadata["execution"] = {"iopub.execute_input": "2026"}
    cell.metadata["papermill"] = {"duration": 0.1}
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    strip_noise(path)
    clean = nbformat.read(path, as_version=4)
    assert "papermill" not in clean.metadata and clean.cells[0].metadata == {"tags": ["parameters"]}
    # JupyterLab writes language_info back on open: stripping it would make every notebook open modified
    assert clean.metadata["language_info"] == {"name": "python", "version": "3.11.7"}
    (tmp_path / "01_cam_baselines.json").write_text(json.dumps({"headline": "gradcam 0.61"}))
    table = summary_table([NotebookRun("01_cam_baselines", True, 90.0, path)], tmp_path)
    assert "gradcam 0.61" in table and "1.5 min" in table


def test_changed_parameters_keeps_only_what_differs_from_the_notebook(tmp_path):
    source = NOTEBOOK_DIR / f"{NOTEBOOKS[0]}.ipynb"  # parameters cell: PROFILE = "cpu", DATA_ROOT = None, …
    same = {"PROFILE": "cpu", "DATA_ROOT": None, "DATASET": "luad", "RESULTS_DIR": None, "FIGURES_DIR": None}
    assert changed_parameters(source, same) == {}  # the reference run injects nothing
    other = {**same, "PROFILE": "quick", "RESULTS_DIR": str(tmp_path), "NEW": 1}
    assert changed_parameters(source, other) == {"PROFILE": "quick", "RESULTS_DIR": str(tmp_path), "NEW": 1}


def test_without_injected_cells_drops_a_stale_parameters_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('PROFILE = "cpu"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('PROFILE = "quick"', metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(PROFILE)"),
    ]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    clean = without_injected_cells(path)
    assert [c.source for c in clean.cells] == ['PROFILE = "cpu"', "print(PROFILE)"]


def test_repo_relative():
    from arml.runtime import REPO_ROOT, repo_relative

    assert repo_relative(REPO_ROOT / "results" / "x.json") == "results/x.json"
    assert repo_relative("/elsewhere/x.json") == "/elsewhere/x.json"


def test_train_runs_in_two_worker_processes_skips_finished_runs(quick_synth, tmp_path):
    """Two runs trained in spawned workers finish with metrics; asked again, nothing is retrained."""
    from arml.experiments import train_runs
    from arml.stage2 import SegConfig

    configs = [
        SegConfig(
            str(quick_synth),
            "train_gt",
            encoder="resnet10t",
            peers=1,
            omega=None,
            relation=None,
            epochs=1,
            batch_size=8,
            seed=seed,
            probe_images=4,
            progress=False,
        )
        for seed in (0, 1)
    ]
    jobs = [(c, tmp_path / f"run{c.seed}") for c in configs]
    train_runs(jobs + jobs[:1], workers=2)  # the duplicate is trained once
    stamps = [(run / "metrics.json").stat().st_mtime_ns for _, run in jobs]
    train_runs(jobs, workers=2)
    assert [(run / "metrics.json").stat().st_mtime_ns for _, run in jobs] == stamps


def test_train_runs_reraises_a_worker_error(tmp_path):
    from arml.experiments import train_runs
    from arml.stage2 import SegConfig

    config = SegConfig(str(tmp_path / "missing"), "train_gt", peers=1, omega=None, relation=None)
    with pytest.raises(FileNotFoundError):
        train_runs([(config, tmp_path / "run")], workers=2)


def test_workers_come_from_the_profile_or_the_environment(monkeypatch, quick_synth):
    from arml.experiments import Experiment

    ex = Experiment("quick", data_root=quick_synth, progress=False)
    monkeypatch.delenv("ARML_WORKERS", raising=False)
    assert ex.workers == 1
    monkeypatch.setenv("ARML_WORKERS", "2")
    assert ex.workers == 2
    monkeypatch.setenv("ARML_WORKERS", "zero")
    with pytest.raises(ValueError, match="ARML_WORKERS"):
        _ = ex.workers
