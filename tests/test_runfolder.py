"""arml.runfolder: the one resume rule both trainers share, on a toy config (no training)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from arml.options import Config, option
from arml.runfolder import RunFolder


@dataclass
class Toy(Config):
    lr: float = option(0.1, "a result field")
    epochs: int = option(2, "another result field")
    device: str = option("cpu", "a runtime field (cannot change the result)")


def _folder(path, resume=True, **changes) -> RunFolder:
    return RunFolder(
        path, Toy(**changes), stage="toy stage", finished="done.json", outputs=("extra.json",), resume=resume
    )


def _finished_run(path):
    run = _folder(path)
    run.start()
    run.save_last({"epoch": 0})
    run.save_best({"epoch": 0})
    run.write_json("history.json", {"history": []})
    run.write_json("extra.json", {})
    run.write_json("done.json", {"score": 1.0})
    (path / "notes.txt").write_text("not a run file")
    return run


def test_nothing_is_written_until_start(tmp_path):
    run = _folder(tmp_path / "run")
    assert not run.finished and run.load_last() is None
    assert not (tmp_path / "run").exists()  # a run that fails its checks before start() leaves no folder
    run.start()
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == Toy().to_dict()


def test_a_different_config_is_refused_naming_the_fields_and_the_way_out(tmp_path):
    _finished_run(tmp_path / "run")
    with pytest.raises(ValueError, match=r"different configuration \(epochs: 2 → 3; lr: 0.1 → 0.2\)") as err:
        _folder(tmp_path / "run", lr=0.2, epochs=3)
    assert "--restart" in str(err.value) and "resume=False" in str(err.value) and "--out" in str(err.value)
    assert "toy stage" in str(err.value)
    assert (tmp_path / "run" / "done.json").exists()  # refused: nothing touched


def test_a_finished_run_is_recognised_and_runtime_fields_do_not_matter(tmp_path):
    _finished_run(tmp_path / "run")
    again = _folder(tmp_path / "run", device="cuda")
    assert again.finished
    assert again.read_json("done.json") == {"score": 1.0}


def test_resume_continues_from_last_and_checks_its_config(tmp_path):
    run = _folder(tmp_path / "run")
    run.start()
    run.save_last({"epoch": 0, "step": 3})
    resumed = _folder(tmp_path / "run", device="cuda")
    assert not resumed.finished
    resumed.start()  # keeps last.pt, rewrites config.json with the new runtime fields
    state = resumed.load_last()
    assert state["epoch"] == 0 and state["step"] == 3 and state["config"] == Toy().to_dict()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["device"] == "cuda"
    # last.pt written under other result fields (config.json edited by hand) is refused too
    (tmp_path / "run" / "config.json").write_text(json.dumps(Toy(lr=0.5).to_dict()))
    odd = _folder(tmp_path / "run", lr=0.5)
    odd.start()
    with pytest.raises(ValueError, match=r"last.pt belongs to a toy stage run .*lr: 0.1 → 0.5"):
        odd.load_last()


def test_restart_removes_the_run_files_only(tmp_path):
    _finished_run(tmp_path / "run")
    run = _folder(tmp_path / "run", resume=False, lr=0.3)  # another config is fine when starting over
    assert not run.finished and run.load_last() is None
    run.start()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "notes.txt"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 0.3


def test_a_start_without_last_checkpoint_clears_leftovers(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    (path / "last.pt").write_bytes(b"orphan: no config.json says what made it")
    (path / "done.json").write_text("{}")
    run = _folder(path)
    assert not run.finished and run.load_last() is None  # without config.json nothing is trusted
    run.start()
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]
