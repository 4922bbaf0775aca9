"""benchmarks/gpu_check.py (make gpu-check): the paper profile's code path, smoke-run on the CPU."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_records_not_run(tmp_path, monkeypatch):
    gpu_check = _module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert json.loads(out.read_text())["ran"] is False


def test_projection_counts_runs_at_the_measured_rates():
    gpu_check = _module()
    rates = {"stage1": 100.0, "stage2": 20.0, "stage2_single": 60.0}
    p = gpu_check.projection(rates)
    per = p["hours_per_run"]
    assert per["stage1"] == pytest.approx(20 * 16678 / 100 / 3600)
    assert per["three"] == pytest.approx(10 * 16678 / 20 / 3600)
    s1, three, single = gpu_check.RUNS["06_final_benchmark"]
    assert p["hours"]["06_final_benchmark"] == pytest.approx(
        s1 * per["stage1"] + three * per["three"] + single * per["single"]
    )
    assert p["total_hours"] == pytest.approx(sum(p["hours"].values()))


def test_cpu_smoke_run_of_the_paper_networks(tmp_path):
    """ResNet-38d + ARS and three ResNeSt-101e PSPNet peers train one step each; AMP is off on the CPU here."""
    gpu_check = _module()
    out = tmp_path / "check.json"
    code = gpu_check.main(
        [
            "--device",
            "cpu",
            "--size",
            "64",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert report["ran"] and report["device"] == "cpu"
    for stage in ("stage1", "stage2", "stage2_single"):
        assert report[stage]["images_per_s"] > 0
    assert set(report["amp_vs_fp32"]) == {"stage1", "stage2"}
    assert report["projection"]["total_hours"] > 0
    assert code == (0 if all(c["ok"] for c in report["amp_vs_fp32"].values()) else 1)
