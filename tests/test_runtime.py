"""arml.runtime on hand-checkable cases: poly lr, atomic writes, JSON, config comparison, RNG state."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from arml.runtime import (
    atomic_write,
    config_changes,
    load_checkpoint,
    poly_lr,
    resolve_device,
    result_fields,
    rng_state,
    save_checkpoint,
    set_poly_lr,
    set_rng_state,
    to_jsonable,
    weights_digest,
    write_json,
)


def test_poly_lr_by_hand():
    assert poly_lr(0.1, 0, 10) == pytest.approx(0.1)
    assert poly_lr(0.1, 5, 10, power=1.0) == pytest.approx(0.05)
    assert poly_lr(0.1, 5, 10) == pytest.approx(0.1 * 0.5**0.9)
    assert poly_lr(0.1, 10, 10) == 0


def test_set_poly_lr_keeps_each_groups_own_base():
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD(
        [{"params": [w], "lr": 0.1}, {"params": [torch.zeros(1, requires_grad=True)], "lr": 1.0}]
    )
    assert set_poly_lr(opt, 5, 10, power=1.0) == pytest.approx(0.05)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.5)
    set_poly_lr(opt, 0, 10)  # from the remembered initial lr, not the decayed one
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 1.0])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu0")


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write(path, lambda tmp: tmp.write_text("old"))
    assert path.read_text() == "old"

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]  # no temporary file left behind


def test_to_jsonable_and_write_json(tmp_path):
    data = {1: np.float32(0.5), "a": np.array([1.0, np.nan]), "t": (np.int64(2), math.inf), "p": Path("x/y")}
    assert to_jsonable(data) == {"1": 0.5, "a": [1.0, None], "t": [2, None], "p": "x/y"}
    path = write_json(tmp_path / "d.json", data)
    assert json.loads(path.read_text()) == to_jsonable(data)
    assert path.read_text().endswith("\n")


def test_config_changes_ignores_runtime_fields():
    saved = {"lr": 0.1, "epochs": 2, "device": "cpu", "progress": True}
    assert config_changes(saved, {**saved, "device": "cuda", "progress": False}) == []
    assert result_fields(saved) == {"lr": 0.1, "epochs": 2}
    assert config_changes(saved, {**saved, "lr": 0.2, "seed": 1}) == ["lr: 0.1 → 0.2", "seed: None → 1"]


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    generator = torch.Generator().manual_seed(3)

    def draw():  # one number from every source rng_state covers
        legacy_numpy = np.random.rand()  # noqa: NPY002 (the legacy global state is what rng_state saves)
        return random.random(), legacy_numpy, torch.rand(1).item(), torch.rand(1, generator=generator).item()

    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state(generator)})
    first = draw()
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], generator)
    assert draw() == first


def test_weights_digest_depends_on_values_not_on_the_file(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))  # with a 0-d buffer
    save_checkpoint(tmp_path / "a.pt", {"model": model.state_dict()})
    save_checkpoint(tmp_path / "b.pt", {"model": model.state_dict()})
    a, b = (load_checkpoint(tmp_path / n)["model"] for n in ("a.pt", "b.pt"))
    assert weights_digest(a) == weights_digest(b) == weights_digest(model.state_dict())
    with torch.no_grad():
        model[0].bias[0] += 1e-6
    assert weights_digest(model.state_dict()) != weights_digest(a)
    renamed = {f"x.{k}": v for k, v in a.items()}
    assert weights_digest(renamed) != weights_digest(a)
