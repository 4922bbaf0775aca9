"""Fault tests: each stage killed with SIGKILL part-way through, then run again with the same command.

Every file is written atomically, and every stage resumes from what it finished, so the rerun must end
exactly where an uninterrupted run ends (same weights digest, same masks, same metrics).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arml.datasets import list_pngs, read_mask

pytestmark = pytest.mark.slow


def _arml(*args: str) -> list[str]:
    return [sys.executable, "-m", "arml", *args, "--quiet"]


def _kill_when(cmd: list[str], ready, timeout: float = 300.0) -> bool:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` is true; False if it finished first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return False


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _digest(run: Path) -> str:
    return json.loads((run / "weights.json").read_text())["digest"]


def test_stage1_killed_after_an_epoch_resumes_to_the_same_weights(quick_synth, tmp_path):
    args = ["train-cls", "--data", str(quick_synth), "--profile", "quick", "--epochs", "2", "--ars", "both"]
    _run(_arml(*args, "--out", str(tmp_path / "whole")))
    killed = tmp_path / "killed"
    assert _kill_when(_arml(*args, "--out", str(killed)), lambda: (killed / "last.pt").exists())
    assert not (killed / "classifier.pt").exists()
    _run(_arml(*args, "--out", str(killed)))
    assert _digest(killed) == _digest(tmp_path / "whole")
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]  # no temp file left


def test_pseudo_masks_killed_mid_folder_finish_to_the_same_masks(quick_copy, tmp_path):
    run = tmp_path / "cls"
    _run(
        _arml(
            "train-cls", "--data", str(quick_copy), "--profile", "quick", "--epochs", "1", "--out", str(run)
        )
    )
    base = ["pseudo-masks", "--checkpoint", str(run), "--cam", "gradcam", "--batch-size", "4"]
    _run(_arml(*base, "--name", "whole"))
    folder = quick_copy / "train_PM" / "killed"
    assert _kill_when(
        _arml(*base, "--name", "killed"), lambda: folder.is_dir() and len(list_pngs(folder)) >= 8
    )
    assert len(list_pngs(folder)) < len(list_pngs(quick_copy / "train"))
    _run(_arml(*base, "--name", "killed"))
    whole = list_pngs(quick_copy / "train_PM" / "whole")
    assert [p.name for p in list_pngs(folder)] == [p.name for p in whole]
    assert all((read_mask(folder / p.name) == read_mask(p)).all() for p in whole)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_stage2_killed_after_an_epoch_resumes_to_the_same_metrics(quick_synth, tmp_path):
    args = [
        "train-seg",
        "--data",
        str(quick_synth),
        "--masks",
        "train_gt",
        "--profile",
        "quick",
        "--epochs",
        "2",
    ]
    _run(_arml(*args, "--out", str(tmp_path / "whole")))
    killed = tmp_path / "killed"
    assert _kill_when(_arml(*args, "--out", str(killed)), lambda: (killed / "last.pt").exists())
    assert not (killed / "metrics.json").exists()
    _run(_arml(*args, "--out", str(killed)))
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    again = json.loads((killed / "metrics.json").read_text())
    for key in ("F_a", "F_b", "F_c", "ensemble", "best_epoch", "val_miou"):
        assert again[key] == whole[key]
