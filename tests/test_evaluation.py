"""arml.evaluation on hand-checkable cases: predict, evaluate_models (peers and ensemble), eval mode, tables."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from arml.datasets import CLASS_NAMES
from arml.evaluation import check_device, eval_mode, evaluate_models, format_metrics, model_names, predict
from arml.models import create_segmenter


class _Oracle(nn.Module):
    """Reads the true label map off channel 0 of the image (label / 10) and answers ``scale``·one-hot."""

    def __init__(self, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, images):
        labels = (images[:, 0] * 10).round().long().clamp(max=3)
        return self.scale * F.one_hot(labels, 4).permute(0, 3, 1, 2).float()


class _AlwaysZero(nn.Module):
    """Logit 1 for class 0 everywhere, 0 elsewhere."""

    def forward(self, images):
        logits = torch.zeros(images.shape[0], 4, *images.shape[2:])
        logits[:, 0] = 1.0
        return logits


def _loader():
    mask = torch.tensor([[[0, 1, 2, 3], [0, 0, 4, 4]]])  # 4 = background: counts nowhere
    images = torch.zeros(1, 3, 2, 4)
    images[:, 0] = mask / 10
    return [(images, mask, ["x"])]


def test_evaluate_models_scores_each_network_and_the_ensemble_by_hand():
    result = evaluate_models([_Oracle(), _AlwaysZero()], _loader(), torch.device("cpu"))
    assert list(result) == ["F_a", "F_b", "ensemble"]
    assert result["F_a"]["miou"] == 1.0 and result["F_a"]["acc"] == 1.0 and result["F_a"]["pixels"] == 6
    # F_b says 0 on the 6 kept pixels: class 0 has TP 3, FP 3 (IoU 1/2); classes 1-3 are missed (IoU 0)
    assert result["F_b"]["iou"] == [0.5, 0.0, 0.0, 0.0]
    assert result["F_b"]["miou"] == 0.125 and result["F_b"]["acc"] == 0.5
    # mean softmax: the oracle's confident 10·one-hot outweighs F_b's mild preference for class 0
    assert result["ensemble"]["miou"] == 1.0
    single = evaluate_models([_Oracle(), _AlwaysZero()], _loader(), torch.device("cpu"), ensemble=False)
    assert list(single) == ["F_a", "F_b"]


def test_model_names():
    assert model_names(1) == ["F_a"]
    assert model_names(3) == ["F_a", "F_b", "F_c", "ensemble"]
    assert model_names(3, ensemble=False) == ["F_a", "F_b", "F_c"]


def test_eval_mode_restores_each_models_mode_even_on_error():
    a, b = nn.Dropout().train(), nn.Dropout().eval()
    with pytest.raises(RuntimeError), eval_mode([a, b]):
        assert not a.training and not b.training
        raise RuntimeError
    assert a.training and not b.training


def test_predict_single_and_ensemble():
    torch.manual_seed(0)
    models = [create_segmenter("pspnet", "resnet10t", encoder_depth=3) for _ in range(2)]
    images = torch.rand(2, 3, 32, 32)
    single = predict(models[0], images)
    assert single.shape == (2, 32, 32) and single.dtype == torch.int64
    assert models[0].training  # mode restored
    with torch.no_grad():
        for m in models:
            m.eval()
        probs = (models[0](images).softmax(1) + models[1](images).softmax(1)) / 2
    assert torch.equal(predict(models, images), probs.argmax(1))
    images = torch.zeros(1, 3, 2, 4)
    images[:, 0] = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]) / 10
    assert predict(_Oracle(), images).tolist() == [[[0, 1, 2, 3], [3, 2, 1, 0]]]


def test_format_metrics_in_percent_with_missing_values():
    metrics = {
        "F_a": {"iou": [0.5, None, 1.0, 0.25], "miou": 0.5833, "mdice": 0.7, "acc": 0.9, "fwiou": math.nan},
        "best_epoch": 1,
        "val_miou": 0.5,
        "split": "val",
        "dataset": "bcss",
    }
    table = format_metrics(metrics)
    assert table.splitlines()[0].startswith("val split, percent")
    assert all(name in table for name in CLASS_NAMES["bcss"])
    row = next(line for line in table.splitlines() if line.startswith("F_a"))
    assert "50.00" in row and "n/a" in row and "58.33" in row and "90.00" in row
    assert table.splitlines()[-1] == "best epoch 1 (F_a val mIoU 50.00)"
    with pytest.raises(ValueError, match="class_names must be"):
        format_metrics(metrics, "camelyon")
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        format_metrics(metrics, ["a", "b", "c"])
    with pytest.raises(ValueError, match="no model results"):
        format_metrics({"split": "test"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is missing")
def test_check_device_refuses_cuda_where_there_is_none():
    assert check_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="not available here"):
        check_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is missing")
def test_check_device_names_the_flag():
    with pytest.raises(
        ValueError, match="device 'cuda' asks for CUDA, which is not available here; use --device auto or cpu"
    ):
        check_device("cuda")


def test_evaluate_refuses_a_stage1_run_and_a_run_without_a_finished_epoch(tmp_path, capsys):
    import json

    from arml.cli import main
    from arml.evaluation import evaluate
    from arml.stage1 import ClsConfig
    from arml.stage2 import SegConfig

    stage1 = tmp_path / "s1"
    stage1.mkdir()
    (stage1 / "config.json").write_text(json.dumps(ClsConfig(data_root=str(tmp_path)).to_dict()))
    (stage1 / "classifier.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"s1 is a stage 1 run folder \(it holds classifier.pt\)") as err:
        evaluate(stage1)
    assert "expected a stage-2 run folder (config.json and best.pt, from arml train-seg)" in str(err.value)
    assert main(["evaluate", "--checkpoint", str(stage1)]) == 2
    assert "is a stage 1 run folder" in capsys.readouterr().err

    stage2 = tmp_path / "s2"
    stage2.mkdir()
    (stage2 / "config.json").write_text(json.dumps(SegConfig(str(tmp_path), "pm").to_dict()))
    with pytest.raises(
        FileNotFoundError, match=r"no finished epoch yet \(no best.pt\); train it with arml train-seg"
    ):
        evaluate(stage2)
