"""benchmarks/convergence_grid.py: the stage-2 length measurement behind the cpu profile."""

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "convergence_grid.py"


def _module():
    spec = importlib.util.spec_from_file_location("convergence_grid", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_are_batch_by_epochs():
    grid = _module()
    assert grid.parse_setting("8x12") == (8, 12)
    assert grid.parse_setting("16X8") == (16, 8)
    for bad in ("8", "8x", "x12", "0x4", "8x-1", "a x b", "8x12x3"):
        with pytest.raises(argparse.ArgumentTypeError, match="BATCHxEPOCHS"):
            grid.parse_setting(bad)


def test_summary_is_mean_and_sample_std_or_a_single_run():
    grid = _module()
    assert grid.summarize([0.7, 0.8, 0.9]) == "0.800 ± 0.100"
    assert grid.summarize([0.5]) == "0.500 (single run)"


def test_trains_each_setting_and_seed_once_and_prints_the_table(quick_synth, tmp_path, capsys):
    grid = _module()
    out = tmp_path / "grid"
    argv = [
        "--data",
        str(quick_synth),
        "--masks",
        "train_gt",
        "--profile",
        "quick",
        "--settings",
        "8x1",
        "16x2",
    ]
    argv += ["--seeds", "0", "1", "--workers", "1", "--out", str(out)]
    assert grid.main(argv) == 0
    runs = sorted(p.name for p in out.iterdir())
    assert len(runs) == 4 and sum(r.startswith("b8-e1-") for r in runs) == 2
    table = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in table if line.split()[:2] in (["8", "1"], ["16", "2"])]
    assert [r[2] for r in rows] == ["1×", "2×"]  # compute relative to the first setting
    for row, prefix in zip(rows, ("b8-e1-", "b16-e2-"), strict=True):
        scores = [
            json.loads((out / r / "metrics.json").read_text())["F_a"]["miou"]
            for r in runs
            if r.startswith(prefix)
        ]
        assert row[-2:] == [f"{s:.3f}" for s in scores]
        config = json.loads((out / next(r for r in runs if r.startswith(prefix)) / "config.json").read_text())
        assert (config["batch_size"], config["peers"], config["omega"]) == (
            int(prefix[1:].split("-")[0]),
            1,
            None,
        )
    # cached: a second call trains nothing new
    before = {r: (out / r / "metrics.json").stat().st_mtime for r in runs}
    assert grid.main(argv) == 0
    assert before == {r: (out / r / "metrics.json").stat().st_mtime for r in runs}
