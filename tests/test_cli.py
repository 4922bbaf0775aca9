"""The `arml` command line end to end on the quick synthetic dataset."""

import subprocess
import sys

import pytest

from arml.cli import main


def test_python_dash_m_arml_help():
    done = subprocess.run(
        [sys.executable, "-m", "arml", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("synth", "data", "train-cls", "pseudo-masks", "train-seg", "evaluate", "reproduce"):
        assert command in done.stdout


def test_synth_cli_writes_a_checkable_dataset(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "q"), "--profile", "quick", "--seed", "3", "--quiet"]) == 0
    assert main(["data", "check", str(tmp_path / "q"), "--quiet"]) == 0
    assert "OK: no problems found" in capsys.readouterr().out
    # same folder, other seed: refused with a clear message instead of mixing two datasets
    assert main(["synth", "--out", str(tmp_path / "q"), "--profile", "quick", "--seed", "4", "--quiet"]) == 2
    assert "seed" in capsys.readouterr().err


def test_train_seg_and_evaluate_cli(quick_synth, tmp_path, capsys):
    run = tmp_path / "seg"
    args = [
        "train-seg",
        "--data",
        str(quick_synth),
        "--masks",
        "train_gt",
        "--out",
        str(run),
        "--profile",
        "quick",
        "--epochs",
        "1",
        "--omega",
        "inf",
        "--relation",
        "pt",
        "--quiet",
    ]
    assert main(args) == 0
    trained = capsys.readouterr().out
    assert "F_a" in trained and "ensemble" in trained and "TAS" in trained
    assert main(["evaluate", "--checkpoint", str(run), "--split", "test"]) == 0
    assert capsys.readouterr().out.strip() == trained.strip()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize("bad", [["--omega", "0.5"], ["--relation", "mse"]])
def test_train_seg_rejects_bad_arguments(quick_synth, tmp_path, bad, capsys):
    code = main(
        [
            "train-seg",
            "--data",
            str(quick_synth),
            "--masks",
            "train_gt",
            "--out",
            str(tmp_path / "x"),
            "--profile",
            "quick",
            "--quiet",
            *bad,
        ]
    )
    assert code == 2 and "error" in capsys.readouterr().err
