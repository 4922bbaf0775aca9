"""The `arml` command line end to end on the quick synthetic dataset."""

import subprocess
import sys

import pytest

from arml.cli import main


def test_python_dash_m_arml_help():
    done = subprocess.run(
        [sys.executable, "-m", "arml", "--help"], capture_output=True, text=True, check=True
    )
    for command in (
        "synth",
        "data",
        "train-cls",
        "pseudo-masks",
        "train-seg",
        "evaluate",
        "predict",
        "reproduce",
    ):
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
    assert f"data: {quick_synth.resolve()} (luad); training masks: train_gt" in trained
    assert main(["evaluate", "--checkpoint", str(run), "--split", "test"]) == 0
    scored = capsys.readouterr().out
    assert scored.splitlines()[0] == f"data: {quick_synth.resolve()}"
    assert scored.split("\n", 1)[1].strip() == trained.split("\n", 1)[1].strip()
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


@pytest.mark.parametrize(
    ("command", "module", "name"),
    [
        ("train-cls", "arml.stage1", "ClsConfig"),
        ("pseudo-masks", "arml.pseudo_masks", "PseudoMaskConfig"),
        ("train-seg", "arml.stage2", "SegConfig"),
    ],
)
def test_every_config_field_is_a_generated_option(command, module, name):
    import dataclasses
    import importlib

    from arml.cli import build_parser

    config_cls = getattr(importlib.import_module(module), name)
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    dests = {a.dest for a in sub._actions}
    for f in dataclasses.fields(config_cls):
        if f.metadata.get("cli", True):
            assert f.name in dests, f"{name}.{f.name} has no --{f.name.replace('_', '-')} option"
            assert f.metadata.get("help"), f"{name}.{f.name} has no one-line help"


def test_generated_options_parse_types_choices_and_none():
    from arml.cli import build_parser, config_overrides
    from arml.pseudo_masks import PseudoMaskConfig
    from arml.stage2 import SegConfig

    parser = build_parser()
    args = parser.parse_args(
        [
            "pseudo-masks",
            "--checkpoint",
            "r",
            "--name",
            "n",
            "--cam",
            "layercam",
            "--scales",
            "1",
            "0.5",
            "--no-flip",
            "--background",
            "none",
            "--use-ars",
        ]
    )
    assert config_overrides(args, PseudoMaskConfig) == {
        "method": "layercam",
        "scales": [1.0, 0.5],
        "flip": False,
        "background": "none",
        "use_ars": True,
    }
    args = parser.parse_args(
        [
            "train-seg",
            "--data",
            "d",
            "--out",
            "o",
            "--masks",
            "m",
            "--omega",
            "none",
            "--relation",
            "none",
            "--peers",
            "1",
            "--no-amp",
        ]
    )
    assert config_overrides(args, SegConfig) == {
        "masks": "m",
        "omega": None,
        "relation": None,
        "peers": 1,
        "amp": False,
    }
    assert config_overrides(
        parser.parse_args(["train-seg", "--data", "d", "--out", "o", "--masks", "m", "--omega", "inf"]),
        SegConfig,
    )["omega"] == float("inf")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--omega", "abc"], "argument --omega: expected float, got 'abc'"),
        (["--relation", "mse"], "argument --relation: 'mse' is not one of: crl, kl, pt, st, none"),
        (["--epochs", "2.5"], "argument --epochs: expected int, got '2.5'"),
    ],
)
def test_bad_option_values_name_the_option(bad, message, capsys):
    assert main(["train-seg", "--data", "d", "--out", "o", "--masks", "m", *bad]) == 2
    assert message in capsys.readouterr().err


def test_reproduce_profile_comes_from_the_flag_then_the_environment(monkeypatch, capsys):
    import arml.reproduce

    seen = []
    monkeypatch.setattr(arml.reproduce, "run_notebooks", lambda profile, *a, **k: seen.append(profile) or [])
    monkeypatch.setenv("ARML_PROFILE", "cpu")
    assert main(["reproduce", "--profile", "quick", "--quiet"]) == 0
    assert main(["reproduce", "--quiet"]) == 0
    monkeypatch.delenv("ARML_PROFILE")
    assert main(["reproduce", "--quiet"]) == 0
    assert seen == ["quick", "cpu", "cpu"]
    out = capsys.readouterr().out
    assert "profile quick (--profile)" in out and "profile cpu ($ARML_PROFILE)" in out
    assert "profile cpu (default)" in out


def test_run_notebooks_pins_arml_profile_for_the_kernels(monkeypatch, tmp_path):
    import os

    import arml.reproduce

    seen = []

    def fake_run(stem, nb_out, params, profile, progress):
        seen.append(os.environ.get("ARML_PROFILE"))
        return arml.reproduce.NotebookRun(stem, True, 0.0, nb_out / f"{stem}.ipynb")

    monkeypatch.setattr(arml.reproduce, "_run_one", fake_run)
    monkeypatch.setenv("ARML_PROFILE", "cpu")
    arml.reproduce.run_notebooks("quick", out=tmp_path, only="01,02", progress=False)
    assert seen == ["quick", "quick"] and os.environ["ARML_PROFILE"] == "cpu"


def test_an_os_error_is_a_message_with_exit_1(monkeypatch, capsys):
    import errno

    import arml.synth

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "disk full while writing /x/synth.json")

    monkeypatch.setattr(arml.synth, "generate_dataset", full_disk)
    assert main(["synth", "--out", "/x", "--quiet"]) == 1
    assert "arml synth: error: [Errno 28] disk full while writing /x/synth.json" in capsys.readouterr().err


def test_synth_overwrite_never_deletes_what_arml_did_not_make(tmp_path, capsys):
    real = tmp_path / "real"
    (real / "train").mkdir(parents=True)
    (real / "train" / "mine.png").write_bytes(b"precious")
    assert main(["synth", "--out", str(real), "--profile", "quick", "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "was not made by arml synth" in err and "--overwrite" not in err.split("error:", 1)[1]
    assert (real / "train" / "mine.png").read_bytes() == b"precious"


def test_synth_overwrite_says_what_it_removes_and_keeps_pseudo_masks(tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["synth", "--out", str(out), "--profile", "quick", "--quiet"]) == 0
    pm = out / "train_PM" / "pm"
    pm.mkdir(parents=True)
    (pm / "manifest.json").write_text("{}")
    capsys.readouterr()
    assert (
        main(["synth", "--out", str(out), "--profile", "quick", "--seed", "1", "--overwrite", "--quiet"]) == 0
    )
    said = capsys.readouterr().out
    assert "removes train/ (48 files)" in said and "keeps 1 pseudo-mask folder(s)" in said
    assert (pm / "manifest.json").exists()
    args = ["synth", "--out", str(out), "--profile", "quick", "--overwrite", "--drop-pseudo-masks", "--quiet"]
    assert main(args) == 0
    assert "removes train_PM/" in capsys.readouterr().out and not pm.exists()


def test_the_command_list_does_not_import_torch():
    code = "import sys; from arml.cli import main; main(['--help']); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith("False") and "train-seg" in done.stdout
