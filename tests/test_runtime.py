"""arml.runtime on hand-checkable cases: poly lr, atomic writes (permissions, temp files, full disks, forbidden
folders), JSON, config comparison, RNG state."""

import errno
import json
import math
import os
import random
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from arml.datasets import list_pngs
from arml.runtime import (
    atomic_write,
    clean_temp_files,
    config_changes,
    current_umask,
    is_temp_file,
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


# ------------------------------------------------------------------ permissions, temp files, full disks
@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_umask_permissions_not_mkstemps(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    for path in (
        atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x")),
        write_json(tmp_path / "b.json", {"a": 1}),
        save_checkpoint(tmp_path / "c.pt", {"a": 1}),
    ):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    (tmp_path / "d.txt").write_text("old")
    (tmp_path / "d.txt").chmod(0o600)  # as an older arml wrote it: repaired on the next write
    atomic_write(tmp_path / "d.txt", lambda tmp: tmp.write_text("new"))
    assert stat.S_IMODE((tmp_path / "d.txt").stat().st_mode) == mode


def test_temp_files_are_recognisable_and_cleaned_without_touching_anything_else(tmp_path):
    seen = []
    atomic_write(tmp_path / "m.png", lambda tmp: seen.append(tmp.name) or tmp.write_bytes(b"x"))
    assert seen[0].startswith(".arml-tmp-m.") and seen[0].endswith(".png") and is_temp_file(seen[0])
    ours = [tmp_path / ".arml-tmp-a.k3j_x9zq.png", tmp_path / ".arml-tmp-c.abcdefgh.pt"]
    others = [tmp_path / ".a.k3j_x9zq.png", tmp_path / "keep.png", tmp_path / ".hidden"]
    for path in ours + others:
        path.write_bytes(b"")
    (tmp_path / ".arml-tmp-dir").mkdir()  # only files are removed
    assert [p.name for p in list_pngs(tmp_path)] == ["keep.png", "m.png"]  # hidden files never listed
    assert clean_temp_files(tmp_path, suffix=".png") == [ours[0]]
    assert clean_temp_files(tmp_path) == [ours[1]]
    assert all(p.exists() for p in others) and (tmp_path / ".arml-tmp-dir").is_dir()
    assert clean_temp_files(tmp_path / "absent") == []


@pytest.mark.parametrize(
    ("code", "message", "kind"),
    [
        (errno.ENOSPC, "disk full while writing {path}", OSError),
        (errno.EDQUOT, "disk full while writing {path}", OSError),
        (errno.EACCES, "cannot write {path}: permission denied", PermissionError),
        (errno.EPERM, "cannot write {path}: permission denied", PermissionError),
        (errno.EROFS, "cannot write {path}: read-only file system", OSError),
    ],
)
def test_atomic_write_says_disk_full_or_forbidden_naming_the_file(tmp_path, code, message, kind):
    path = tmp_path / "r.json"
    write_json(path, {"old": 1})

    def refused(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(code, os.strerror(code), str(tmp))

    with pytest.raises(kind) as err:
        atomic_write(path, refused)
    assert err.value.errno == code
    assert str(err.value) == f"[Errno {code}] " + message.format(path=path)
    assert isinstance(err.value.__cause__, OSError)  # the original error stays attached
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left


def test_other_errors_pass_through_unchanged(tmp_path):
    def broken(tmp: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output error") as err:
        atomic_write(tmp_path / "x", broken)
    assert err.value.errno == errno.EIO


def test_a_folder_that_refuses_the_temp_file_is_named(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".arml-tmp-a.x"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # what a folder without write permission does
    with pytest.raises(PermissionError, match=f"cannot write {tmp_path / 'a.txt'}: permission denied"):
        atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_named(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=f"cannot write {folder / 'a.txt'}: permission denied"):
            atomic_write(folder / "a.txt", lambda tmp: tmp.write_text("x"))
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize(
    "torch_message",
    [
        "[enforce fail at inline_container.cc:778] . unexpected pos 4736 vs 4624",
        "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: "
        "file write failed",
    ],
)
def test_save_checkpoint_turns_torchs_failed_write_into_disk_full(tmp_path, monkeypatch, torch_message):
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1})

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise RuntimeError(torch_message)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=f"disk full while writing {path}") as err:
        save_checkpoint(path, {"epoch": 2})
    assert err.value.errno == errno.ENOSPC
    assert torch_message in str(err.value.__cause__)  # torch's own words are kept in the chain
    monkeypatch.undo()
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_save_checkpoint_lets_other_runtime_errors_through(tmp_path, monkeypatch):
    def unpicklable(obj, f, *args, **kwargs):
        raise RuntimeError("cannot pickle 'generator' object")

    monkeypatch.setattr(torch, "save", unpicklable)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(tmp_path / "x.pt", {})
