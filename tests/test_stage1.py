import json

import numpy as np
import pytest
import torch

from arml.cli import main
from arml.datasets import list_pngs, read_mask
from arml.stage1 import ClsConfig, PseudoMaskConfig, generate_pseudo_masks, load_classifier, train_classifier


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
    from arml.experiments import classifier_digest
    from arml.runtime import weights_digest

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


def test_pseudo_masks_are_written_scored_and_resumable(quick_copy, tmp_path):
    train_classifier(_config(quick_copy, epochs=1), tmp_path / "run")
    result = generate_pseudo_masks(
        tmp_path / "run", "pm_cam", config=PseudoMaskConfig(method="cam"), progress=False
    )
    train = list_pngs(quick_copy / "train")
    written = list_pngs(quick_copy / "train_PM" / "pm_cam")
    assert [p.name for p in written] == [p.name for p in train] and result["written"] == len(train)
    mask = read_mask(written[0])
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1, 2, 3, 4}
    assert 0.0 <= result["metrics"]["miou"] <= 1.0
    written[0].unlink()
    again = generate_pseudo_masks(
        tmp_path / "run", "pm_cam", config=PseudoMaskConfig(method="cam"), progress=False
    )
    assert again["written"] == 1 and again["skipped"] == len(train) - 1
    assert again["metrics"]["miou"] == pytest.approx(result["metrics"]["miou"])
    assert not list((quick_copy / "train_PM" / "pm_cam").glob(".*"))  # no temporary files left


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
