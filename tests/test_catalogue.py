"""The bad-input catalogue (docs/reliability.md): every case through the command line, on tiny data.

Each case prepares a bad input, runs ``arml …`` and checks the exit status and that the message names the
file or option at fault. Cases that need a trained run (a finished run given other data, a killed run)
are tested where the run is made: tests/test_stage1.py, test_stage2.py, test_pseudo_masks.py,
test_faults.py; the table in docs/reliability.md points at each.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from arml.cli import main
from arml.datasets import write_mask


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_train_image(root, tmp):
    bad = _truncate(sorted((root / "train").glob("*.png"))[0])
    return ["data", "check", str(root), "--quiet"], 1, [bad.name, "truncated"]


def truncated_val_image(root, tmp):
    bad = _truncate(sorted((root / "val" / "img").glob("*.png"))[0])
    return ["data", "check", str(root), "--quiet"], 1, [f"val/img/{bad.name}"]


def jpg_in_train(root, tmp):
    Image.new("RGB", (16, 16)).save(root / "train" / "extra-[1 0 0 0].jpg")
    return ["data", "check", str(root), "--quiet"], 1, ["extra-[1 0 0 0].jpg"]


def bcss_on_luad_names_data_check(root, tmp):
    return ["data", "check", str(root), "--dataset", "bcss", "--quiet"], 1, ["luad", "--dataset"]


def bcss_on_luad_names_train_cls(root, tmp):
    return _train_cls(root, tmp, "--dataset", "bcss"), 2, ["--dataset luad"]


def cuda_without_gpu_train_cls(root, tmp):
    return _train_cls(root, tmp, "--device", "cuda"), 2, ["--device auto or cpu"]


def val_mask_of_the_wrong_size(root, tmp):
    mask = sorted((root / "val" / "mask").glob("*.png"))[0]
    write_mask(mask, np.zeros((8, 8), dtype=np.uint8))
    return _train_cls(root, tmp), 2, [f"val/mask/{mask.name}", "size"]


def mask_value_7_in_test(root, tmp):
    mask = sorted((root / "test" / "mask").glob("*.png"))[0]
    arr = np.zeros((16, 16), dtype=np.uint8)
    arr[0, 0] = 7
    image = Image.fromarray(arr, mode="P")
    image.putpalette([v for i in range(256) for v in (i, i, i)])  # a full palette keeps index 7 as 7
    image.save(mask)
    return _train_cls(root, tmp), 2, [f"test/mask/{mask.name}", "7"]


def missing_test_split(root, tmp):
    shutil.rmtree(root / "test")
    return _train_cls(root, tmp), 2, [f"{root / 'test'}", "missing"]


def omega_not_a_number(root, tmp):
    return (
        ["train-seg", "--data", str(root), "--masks", "train_gt", "--out", str(tmp / "o"), "--omega", "abc"],
        2,
        [
            "--omega",
            "abc",
        ],
    )


def synth_overwrite_of_foreign_folder(root, tmp):
    return (
        ["synth", "--out", str(root), "--profile", "quick", "--overwrite", "--quiet"],
        2,
        ["was not made by arml synth"],
    )


def stage2_run_given_to_pseudo_masks(root, tmp):
    run = tmp / "seg"
    run.mkdir()
    for name in ("config.json", "metrics.json"):
        (run / name).write_text("{}")
    (run / "best.pt").write_bytes(b"")
    return ["pseudo-masks", "--checkpoint", str(run), "--name", "x", "--quiet"], 2, ["stage 2 run folder"]


def stage1_run_given_to_evaluate(root, tmp):
    run = tmp / "cls"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({}))
    (run / "classifier.pt").write_bytes(b"")
    return ["evaluate", "--checkpoint", str(run)], 2, ["stage 1 run folder"]


def _train_cls(root, tmp, *extra):
    out = tmp / "cls_run"
    return ["train-cls", "--data", str(root), "--out", str(out), "--profile", "quick", "--quiet", *extra]


CASES = [
    truncated_train_image,
    truncated_val_image,
    jpg_in_train,
    bcss_on_luad_names_data_check,
    bcss_on_luad_names_train_cls,
    cuda_without_gpu_train_cls,
    val_mask_of_the_wrong_size,
    mask_value_7_in_test,
    missing_test_split,
    omega_not_a_number,
    synth_overwrite_of_foreign_folder,
    stage2_run_given_to_pseudo_masks,
    stage1_run_given_to_evaluate,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_catalogue(case, tiny_root, tmp_path, capsys):
    argv, code, needles = case(tiny_root, tmp_path)
    assert main(argv) == code
    said = capsys.readouterr()
    text = said.out + said.err
    for needle in needles:
        assert needle in text, f"{case.__name__}: {needle!r} not in {text!r}"
    if argv[0] == "train-cls":
        assert not (tmp_path / "cls_run").exists()  # refused before any run folder is made
