import json

import pytest
import torch
import torch.nn.functional as F

from arml.cli import main
from arml.datasets import list_pngs
from arml.pseudo_masks import PseudoMaskConfig
from arml.stage1 import ClsConfig, evaluate, load_classifier, load_config, train_classifier


def _config(root, **kw):
    base = {
        "backbone": "resnet10t",
        "feature_level": 3,
        "epochs": 2,
        "batch_size": 16,
        "lr": 0.05,
        "progress": False,
    }
    return ClsConfig(data_root=str(root), **{**base, **kw})


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_config_validation_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="recipe must be one of"):
        ClsConfig(data_root=str(tmp_path), recipe="authors")
    with pytest.raises(ValueError, match="ars must be one of"):
        ClsConfig(data_root=str(tmp_path), ars="cbam")
    with pytest.raises(ValueError, match="epochs"):
        ClsConfig(data_root=str(tmp_path), epochs=0)
    with pytest.raises(ValueError, match="ClsConfig.output_stride must be one of"):
        ClsConfig(data_root=str(tmp_path), output_stride=4)
    official = ClsConfig(data_root=str(tmp_path), recipe="official")
    assert official.first_ars_epoch == 2 and official.sgd_momentum == 5e-4
    assert ClsConfig(data_root=str(tmp_path)).first_ars_epoch == 0


def test_same_seed_same_classifier(quick_synth, tmp_path):
    a = train_classifier(_config(quick_synth, epochs=1), tmp_path / "a")
    b = train_classifier(_config(quick_synth, epochs=1), tmp_path / "b")
    c = train_classifier(_config(quick_synth, epochs=1, seed=1), tmp_path / "c")
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_resume_after_an_interrupted_epoch_gives_the_same_result(quick_synth, tmp_path, monkeypatch):
    config = _config(quick_synth, epochs=2)
    straight = train_classifier(config, tmp_path / "straight")

    calls = {"n": 0}
    real = torch.nn.functional.multilabel_soft_margin_loss

    def dies_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # 3 steps per epoch: the second step of epoch 2
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "multilabel_soft_margin_loss", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(config, tmp_path / "resumed")
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0]  # epoch 1 finished, epoch 2 was lost mid-way
    monkeypatch.setattr(torch.nn.functional, "multilabel_soft_margin_loss", real)
    resumed = train_classifier(config, tmp_path / "resumed")
    assert _same_weights(straight, resumed)
    assert len(json.loads((tmp_path / "resumed" / "history.json").read_text())["history"]) == 2


def test_finished_run_is_loaded_and_a_changed_config_refused(quick_synth, tmp_path):
    config = _config(quick_synth, epochs=1)
    first = train_classifier(config, tmp_path / "run")
    assert _same_weights(first, load_classifier(tmp_path / "run"))
    assert _same_weights(first, train_classifier(config, tmp_path / "run"))
    with pytest.raises(ValueError, match="different config"):
        train_classifier(_config(quick_synth, epochs=1, lr=0.1), tmp_path / "run")
    # The digest training writes is the one the checkpoint gives (pseudo-mask cache keys rely on it)
    from arml.runtime import weights_digest
    from arml.stage1 import classifier_digest

    assert classifier_digest(tmp_path / "run") == weights_digest(first.state_dict())
    (tmp_path / "run" / "weights.json").unlink()  # a run made before weights.json existed
    assert classifier_digest(tmp_path / "run") == weights_digest(first.state_dict())


def test_official_schedule_turns_ars_on_from_epoch_index_two(quick_synth, tmp_path):
    train_classifier(_config(quick_synth, epochs=3, recipe="official"), tmp_path / "off")
    history = json.loads((tmp_path / "off" / "history.json").read_text())["history"]
    assert [h["ars"] for h in history] == [False, False, True]
    model = load_classifier(tmp_path / "off")
    assert float(model.ars.cca.gamma) == 0.0  # official CCA: gamma frozen at zero
    assert PseudoMaskConfig().resolve_use_ars(model) is False  # official PMs come from the ARS-free net


def test_cli_train_cls_and_pseudo_masks_end_to_end(quick_copy, tmp_path, capsys):
    run = tmp_path / "cli_run"
    code = main(
        [
            "train-cls",
            "--data",
            str(quick_copy),
            "--out",
            str(run),
            "--profile",
            "quick",
            "--epochs",
            "1",
            "--ars",
            "both",
            "--quiet",
        ]
    )
    assert code == 0 and (run / "classifier.pt").exists()
    code = main(
        [
            "pseudo-masks",
            "--data",
            str(quick_copy),
            "--checkpoint",
            str(run),
            "--name",
            "cli",
            "--cam",
            "gradcam",
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "pseudo masks vs train_gt (synthetic): mIoU" in out
    assert len(list_pngs(quick_copy / "train_PM" / "cli")) == len(list_pngs(quick_copy / "train"))
    assert main(["pseudo-masks", "--checkpoint", str(run), "--name", "x", "--cam", "nope", "--quiet"]) == 2


def test_from_dict_round_trips_and_refuses_unknown_keys(tmp_path):
    config = ClsConfig(data_root=str(tmp_path), ars=None, lr=0.1)
    assert ClsConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"unknown ClsConfig fields \['lrr'\]"):
        ClsConfig.from_dict({**config.to_dict(), "lrr": 0.1})
    assert "extra" not in config.to_dict()


def test_a_run_file_with_an_unknown_field_is_refused(tmp_path):
    config = ClsConfig(data_root=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**config.to_dict(), "extra": {}}))
    with pytest.raises(ValueError, match=r"unknown ClsConfig fields \['extra'\]"):
        load_config(tmp_path)


def test_a_missing_dataset_leaves_no_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        train_classifier(_config(tmp_path / "nowhere"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


class _Logits(torch.nn.Module):
    """Returns channel 0, row 0 of the image as the logits: a 'classifier' whose outputs are hand-set."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_training = []

    def forward(self, x):
        self.seen_training.append(self.training)
        return x[:, 0, 0, :]


def test_evaluate_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [-2.0, 1.0, -0.5, 3.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    images = torch.zeros(2, 3, 1, 4)
    images[:, 0, 0] = logits
    loader = [(images[:1], labels[:1], ["a"]), (images[1:], labels[1:], ["b"])]  # batches of one
    model = _Logits().train()
    result = evaluate(model, loader)
    # predicted present where the logit > 0: [1, 0, 1, 0] and [0, 1, 0, 1]; class 2 is wrong twice
    assert result["accuracy"] == [1.0, 1.0, 0.0, 1.0]
    assert result["mean_accuracy"] == 0.75 and result["images"] == 2
    # multilabel soft margin by hand: mean over classes of softplus(-x) where y = 1, softplus(x) where y = 0
    per_image = torch.where(labels > 0, F.softplus(-logits), F.softplus(logits)).mean(1)
    assert result["loss"] == pytest.approx(per_image.mean().item())
    assert model.seen_training == [False, False] and model.training  # eval mode inside, restored after
    with pytest.raises(ValueError, match="at least one image"):
        evaluate(model, [])


def test_data_root_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ClsConfig(data_root="data/x").data_root == str(tmp_path.resolve() / "data" / "x")
    with pytest.raises(ValueError, match="ClsConfig.data_root must be a path"):
        ClsConfig(data_root="")


def test_a_finished_run_answers_only_for_the_data_it_was_made_from(quick_synth, tmp_path):
    import shutil

    out = tmp_path / "run"
    out.mkdir()  # an earlier attempt that failed before its first epoch left another config behind
    (out / "config.json").write_text(json.dumps(_config(quick_synth, lr=9.0).to_dict()))
    first = train_classifier(_config(quick_synth, epochs=1), out)
    data = json.loads((out / "data.json").read_text())
    assert data["data_root"] == str(quick_synth.resolve()) and data["folders"]["train"]["files"] == 48

    moved = shutil.copytree(quick_synth, tmp_path / "moved")  # the same files elsewhere
    assert _same_weights(first, train_classifier(_config(moved, epochs=1), out))
    # the run now records where its data is (pseudo masks read the root from config.json)
    assert json.loads((out / "data.json").read_text())["data_root"] == str(moved.resolve())
    assert json.loads((out / "config.json").read_text())["data_root"] == str(moved.resolve())

    (moved / "train" / sorted(p.name for p in (moved / "train").iterdir())[0]).unlink()
    with pytest.raises(ValueError, match="made from other data") as err:
        train_classifier(_config(moved, epochs=1), out)
    message = str(err.value)
    assert f"made from other data: {moved.resolve()} (fingerprint" in message
    assert "train/: 48 files" in message and "→ 47 files" in message and "--restart" in message

    with pytest.raises(ValueError, match=r"does not exist") as err:
        train_classifier(_config(tmp_path / "nowhere", epochs=1), out)
    assert "nowhere (--data)" in str(err.value) and "--restart" in str(err.value)


def test_inputs_and_device_are_checked_before_any_folder_is_made(quick_synth, tmp_path):
    import shutil

    partial = shutil.copytree(quick_synth, tmp_path / "no_test", ignore=shutil.ignore_patterns("test"))
    with pytest.raises(FileNotFoundError, match=r"no_test/test/img: no test images"):
        train_classifier(_config(partial), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"--dataset bcss does not fit this data.*use --dataset luad"):
        train_classifier(_config(quick_synth, dataset="bcss"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    if not torch.cuda.is_available():
        with pytest.raises(
            ValueError, match="asks for CUDA, which is not available here; use --device auto or cpu"
        ):
            train_classifier(_config(quick_synth, device="cuda"), tmp_path / "run")
        assert not (tmp_path / "run").exists()
        code = main(
            ["train-cls", "--data", str(quick_synth), "--out", str(tmp_path / "run"), "--device", "cuda"]
        )
        assert code == 2 and not (tmp_path / "run").exists()


def test_a_stage2_folder_is_not_a_stage1_run(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"masks": "pm"}))
    with pytest.raises(
        ValueError, match=r"is a stage 2 run folder \(it holds metrics.json\); expected a stage-1"
    ):
        load_config(tmp_path)


def test_a_diverged_epoch_stops_the_run_before_anything_is_saved(quick_synth, tmp_path, monkeypatch):
    import arml.stage1 as stage1

    monkeypatch.setattr(
        stage1, "train_one_epoch", lambda *a, **k: {"loss": float("nan"), "step": 1, "seconds": 0.0}
    )
    with pytest.raises(FloatingPointError, match="diverged.*epoch 1 is nan"):
        train_classifier(_config(quick_synth), tmp_path / "run")
    assert not (tmp_path / "run" / "classifier.pt").exists() and not (tmp_path / "run" / "last.pt").exists()
