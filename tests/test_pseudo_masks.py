import json

import numpy as np
import pytest
import torch

from arml.datasets import list_pngs, read_mask
from arml.pseudo_masks import MANIFEST, PseudoMaskConfig, generate_pseudo_masks, manifest_changes
from arml.runtime import TEMP_PREFIX
from arml.stage1 import ClsConfig, classifier_digest, train_classifier


@pytest.fixture
def run(quick_copy, tmp_path):
    config = ClsConfig(
        data_root=str(quick_copy),
        backbone="resnet10t",
        feature_level=3,
        epochs=1,
        batch_size=16,
        lr=0.05,
        progress=False,
    )
    train_classifier(config, tmp_path / "run")
    return tmp_path / "run"


def _make(run, name="pm", **kw):
    overwrite = kw.pop("overwrite", False)
    return generate_pseudo_masks(
        run, name, config=PseudoMaskConfig(**kw), progress=False, overwrite=overwrite
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "nope"}, "method must be one of"),
        ({"normalization": "max"}, "normalization must be one of"),
        ({"background": "white"}, "background must be one of"),
        ({"scales": ()}, "scales must be positive"),
        ({"scales": (1.0, -0.5)}, "scales must be positive"),
        ({"bg_threshold": 300}, r"bg_threshold must be in \[0, 255\]"),
        ({"bg_min_size": 0}, "bg_min_size must be an int >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an int >= 1"),
        ({"use_ars": "yes"}, "use_ars must be None, True or False"),
        ({"flip": 1}, "flip must be True or False"),
    ],
)
def test_config_rejects_bad_values_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PseudoMaskConfig(**kwargs)


def test_config_round_trips_and_rejects_unknown_keys():
    config = PseudoMaskConfig(method="layercam", scales=[1.0, 0.5])
    assert config.scales == (1.0, 0.5)
    assert PseudoMaskConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"unknown PseudoMaskConfig fields \['methd'\]"):
        PseudoMaskConfig.from_dict({"methd": "cam"})


def test_to_masks_is_the_cams_to_masks_call():
    cams = torch.zeros(1, 4, 4, 4)
    cams[0, 2] = 1.0
    labels = torch.tensor([[1, 0, 1, 0]])
    images = torch.zeros(1, 3, 4, 4)
    images[0, :, 0, 0] = 1.0  # one white pixel: a blob smaller than bg_min_size=2 stays tissue
    masks = PseudoMaskConfig(bg_min_size=2).to_masks(cams, labels, images, "luad")
    assert masks.tolist() == [[[2] * 4] * 4]
    masks = PseudoMaskConfig(bg_min_size=1).to_masks(cams, labels, images, "luad")
    assert masks[0, 0, 0] == 4 and (masks.flatten()[1:] == 2).all()
    assert PseudoMaskConfig().to_masks(cams, labels, images, "bcss")[0, 0, 0] == 2  # bcss: no white rule


def test_masks_are_written_scored_resumable_with_a_manifest(run, quick_copy, monkeypatch):
    result = _make(run, method="cam")
    folder = quick_copy / "train_PM" / "pm"
    train = list_pngs(quick_copy / "train")
    written = list_pngs(folder)
    assert [p.name for p in written] == [p.name for p in train] and result["written"] == len(train)
    mask = read_mask(written[0])
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1, 2, 3, 4}
    assert 0.0 <= result["metrics"]["miou"] <= 1.0
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["method"] == "cam" and manifest["config"]["method"] == "cam"
    assert manifest["classifier"]["weights_digest"] == classifier_digest(run)
    assert manifest["count"] == len(train) and manifest["complete"] is True
    assert manifest["miou"] == pytest.approx(result["metrics"]["miou"])
    written[0].unlink()
    (folder / f"{TEMP_PREFIX}x.abcd1234.png").write_bytes(b"half a file")  # a killed atomic write's temp file
    again = _make(run, method="cam")
    assert again["written"] == 1 and again["skipped"] == len(train) - 1
    assert again["metrics"]["miou"] == pytest.approx(result["metrics"]["miou"])
    assert not list(folder.glob(".*"))  # no temporary files left
    _make(run, method="cam", batch_size=7)  # a different batch size makes the same masks: resumes
    with monkeypatch.context() as m:  # a finished folder of unchanged images: no second full decode
        m.setattr("arml.pseudo_masks.validate_inputs", lambda *a, **k: pytest.fail("validated again"))
        assert _make(run, method="cam")["written"] == 0
    # The manifest records the data, absolute, with a fingerprint of the training images
    assert result["data_root"] == manifest["data_root"] == str(quick_copy.resolve())
    assert manifest["data"]["folders"]["train"]["files"] == len(train)
    for folder in ("train", "train_gt"):  # an image dropped from the data since the masks were made
        (quick_copy / folder / train[0].name).unlink()
    with pytest.raises(ValueError, match=r"training images .*train/: 48 files, \d+ bytes → 47 files") as err:
        _make(run, method="cam")
    assert "--overwrite" in str(err.value)


def test_another_method_under_the_same_name_is_refused_then_overwritten(run, quick_copy):
    _make(run, method="cam")
    with pytest.raises(ValueError, match=r"config.method: 'cam' → 'layercam'.*--overwrite"):
        _make(run, method="layercam")
    result = _make(run, method="layercam", overwrite=True)
    assert result["written"] == len(list_pngs(quick_copy / "train"))
    assert json.loads((quick_copy / "train_PM" / "pm" / MANIFEST).read_text())["method"] == "layercam"


def test_a_folder_of_unknown_origin_is_refused(run, quick_copy):
    folder = quick_copy / "train_PM" / "pm"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="without a manifest.json"):
        _make(run)


def test_manifest_changes_name_classifier_and_dataset():
    base = {
        "config": {"method": "cam", "batch_size": 1},
        "classifier": {"weights_digest": "a"},
        "dataset": "luad",
    }
    other = {
        "config": {"method": "cam", "batch_size": 9},
        "classifier": {"weights_digest": "b"},
        "dataset": "bcss",
    }
    assert manifest_changes(base, other) == ["classifier weights: 'a' → 'b'", "dataset: 'luad' → 'bcss'"]


def test_cli_refuses_another_cam_under_the_same_name_until_overwrite(run, quick_copy, capsys):
    from arml.cli import main

    base = ["pseudo-masks", "--checkpoint", str(run), "--name", "cli", "--quiet"]
    assert main([*base, "--cam", "gradcam"]) == 0
    assert "(gradcam;" in capsys.readouterr().out
    assert main([*base, "--cam", "layercam"]) == 2
    err = capsys.readouterr().err
    assert "config.method: 'gradcam' → 'layercam'" in err and "--overwrite" in err
    assert main([*base, "--cam", "layercam", "--overwrite"]) == 0
    assert json.loads((quick_copy / "train_PM" / "cli" / MANIFEST).read_text())["method"] == "layercam"


def _fake_run(folder, config: dict, *files):
    """A run folder with a config and empty marker files: enough for the checks that run before any CAM."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    for name in files:
        (folder / name).write_bytes(b"")
    return folder


def test_wrong_inputs_are_refused_before_the_mask_folder_is_made(quick_copy, tmp_path, capsys):
    from arml.cli import main
    from arml.stage2 import SegConfig

    cls = ClsConfig(data_root=str(quick_copy)).to_dict()
    stage2 = _fake_run(tmp_path / "s2", SegConfig(str(quick_copy), "pm").to_dict(), "best.pt", "metrics.json")
    with pytest.raises(
        ValueError, match=r"s2 is a stage 2 run folder \(it holds metrics.json, best.pt\)"
    ) as err:
        generate_pseudo_masks(stage2, "pm", progress=False)
    assert "expected a stage-1 run folder (config.json and classifier.pt" in str(err.value)
    unfinished = _fake_run(tmp_path / "s1u", cls, "last.pt")
    with pytest.raises(
        ValueError, match=r"unfinished stage-1 run \(no classifier.pt\); finish it with arml train-cls"
    ):
        generate_pseudo_masks(unfinished, "pm", progress=False)
    finished = _fake_run(tmp_path / "s1", cls, "classifier.pt")  # empty: each check comes before loading it
    (finished / "weights.json").write_text(json.dumps({"digest": "abc"}))
    with pytest.raises(ValueError, match="--name must be a plain folder name"):
        generate_pseudo_masks(finished, "../pm", progress=False)
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist \(--data\)"):
        generate_pseudo_masks(finished, "pm", data_root=tmp_path / "nowhere", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(
            ValueError, match="asks for CUDA, which is not available here; use --device auto or cpu"
        ):
            generate_pseudo_masks(finished, "pm", device="cuda", progress=False)
        assert main(["pseudo-masks", "--checkpoint", str(finished), "--name", "pm", "--device", "cuda"]) == 2
        assert "use --device auto or cpu" in capsys.readouterr().err
    assert main(["pseudo-masks", "--checkpoint", str(stage2), "--name", "pm", "--quiet"]) == 2
    assert "is a stage 2 run folder" in capsys.readouterr().err
    broken = list_pngs(quick_copy / "train")[3]
    broken.write_bytes(broken.read_bytes()[:100])  # a truncated training image
    with pytest.raises(ValueError, match="the train split fails the data check") as err:
        generate_pseudo_masks(finished, "pm", progress=False)
    assert f"{broken}: unreadable image" in str(err.value)
    (finished / "weights.json").unlink()  # now the digest comes from classifier.pt, which is damaged
    with pytest.raises(ValueError, match=r"s1/classifier.pt cannot be read \(EOFError") as err:
        generate_pseudo_masks(finished, "pm", progress=False)
    assert f"arml train-cls --out {finished} --restart" in str(err.value)
    assert not (quick_copy / "train_PM").exists()  # no failing call left a folder behind
