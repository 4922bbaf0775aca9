"""arml.runfolder: the one resume rule both trainers share, on a toy config (no training)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from arml.options import Config, option
from arml.runfolder import RunFolder, check_inputs, data_changes, data_record, require_run, run_kind


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


# ------------------------------------------------------------------ what a run is made from: data records
def _dataset(root, train=("a.png", "b.png"), splits=("val", "test")):
    """A dataset skeleton: empty PNG-named files are enough for the layout checks and the fingerprint."""
    for name in train:
        (root / "train").mkdir(parents=True, exist_ok=True)
        (root / "train" / name).write_bytes(b"x" * len(name))
    for split in splits:
        for kind in ("img", "mask"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            (root / split / kind / "v.png").write_bytes(b"y")
    return root


def _record(root):
    return data_record(root, {"train": root / "train"})


def test_fingerprint_sees_names_and_sizes_not_the_location(tmp_path):
    a = _dataset(tmp_path / "a")
    b = _dataset(tmp_path / "b")
    (a / "train" / ".a.tmp.png").write_bytes(b"half a file")  # hidden: an interrupted atomic write
    ra, rb = _record(a), _record(b)
    assert ra["fingerprint"] == rb["fingerprint"]  # the same files elsewhere: data that moved
    assert ra["data_root"] == str(a.resolve()) and ra["folders"]["train"]["path"] == "train"
    assert ra["folders"]["train"]["files"] == 2 and ra["folders"]["train"]["bytes"] == 10
    (b / "train" / "b.png").write_bytes(b"longer now")
    assert _record(b)["fingerprint"] != ra["fingerprint"]  # same names, another size
    (b / "train" / "b.png").rename(b / "train" / "c.png")
    changes = data_changes(ra, _record(b))
    assert changes == ["train/: 2 files, 10 bytes → 2 files, 15 bytes"]
    assert _record(tmp_path / "nowhere")["folders"]["train"]["files"] is None
    upstream = data_record(a, {"train": a / "train"}, {"masks manifest": "abc"})
    assert upstream["fingerprint"] != ra["fingerprint"]
    assert data_changes(ra, upstream) == ["masks manifest: None → 'abc'"]


def _data_folder(path, data, resume=True, **changes) -> RunFolder:
    return RunFolder(path, Toy(**changes), stage="toy stage", finished="done.json", resume=resume, data=data)


def test_a_finished_run_refuses_other_data_naming_old_and_new_and_the_flags(tmp_path):
    old = _dataset(tmp_path / "old")
    run = _data_folder(tmp_path / "run", _record(old))
    run.start()
    run.write_json("done.json", {})
    assert json.loads((tmp_path / "run" / "data.json").read_text()) == _record(old)

    moved = tmp_path / "moved"
    old.rename(moved)  # the same files, elsewhere: accepted
    assert _data_folder(tmp_path / "run", _record(moved)).finished

    other = _dataset(tmp_path / "other", train=("a.png", "b.png", "c.png"))
    with pytest.raises(ValueError, match="made from other data") as err:
        _data_folder(tmp_path / "run", _record(other))
    message = str(err.value)
    assert str(tmp_path / "old") in message and str(other) in message  # old and new data, absolute
    assert "train/: 2 files, 10 bytes → 3 files, 15 bytes" in message
    assert "--restart (resume=False)" in message and "--out" in message

    with pytest.raises(ValueError, match=r"nowhere \(--data\) does not exist") as err:
        _data_folder(tmp_path / "run", _record(tmp_path / "nowhere"))
    assert str(tmp_path / "old") in str(err.value) and "--restart" in str(err.value)

    again = _data_folder(tmp_path / "run", _record(other), resume=False)  # --restart: other data is fine
    again.start()
    assert json.loads((tmp_path / "run" / "data.json").read_text())["data_root"] == str(other)
    assert not (tmp_path / "run" / "done.json").exists()


def test_interrupted_runs_check_their_data_and_old_runs_without_data_json_pass(tmp_path):
    old, other = _dataset(tmp_path / "old"), _dataset(tmp_path / "other", train=("z.png",))
    run = _data_folder(tmp_path / "run", _record(old))
    run.start()
    run.save_last({"epoch": 0})
    with pytest.raises(ValueError, match="made from other data"):
        _data_folder(tmp_path / "run", _record(other))  # resuming on other data is refused too
    (tmp_path / "run" / "data.json").unlink()  # a run made before data.json: accepted unchecked
    assert _data_folder(tmp_path / "run", _record(other)).load_last()["epoch"] == 0


def test_only_the_test_split_changed_points_at_evaluate(tmp_path):
    root = _dataset(tmp_path / "d")
    folders = {"train": root / "train", "test/img": root / "test" / "img"}
    run = _data_folder(tmp_path / "run", data_record(root, folders))
    run.start()
    run.write_json("done.json", {})
    (root / "test" / "img" / "w.png").write_bytes(b"new")
    with pytest.raises(ValueError, match=r"test/img/: 1 files, 1 bytes → 2 files, 4 bytes.*arml evaluate"):
        _data_folder(tmp_path / "run", data_record(root, folders))


def test_a_run_that_failed_before_its_first_epoch_does_not_block_the_corrected_command(tmp_path):
    run = _folder(tmp_path / "run", lr=5.0)  # say lr=5 diverged: config.json written, no last.pt
    run.start()
    corrected = _folder(tmp_path / "run", lr=0.1)  # nothing to protect: a fresh start, not a refusal
    assert not corrected.finished and corrected.load_last() is None
    corrected.start()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 0.1


def test_a_damaged_config_json_is_named(tmp_path):
    _finished_run(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        _folder(tmp_path / "run")


def test_check_inputs_finds_missing_splits_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data root .*nowhere does not exist \(--data\)"):
        check_inputs(tmp_path / "nowhere")
    root = _dataset(tmp_path / "d", splits=("val",))
    with pytest.raises(FileNotFoundError, match=r"test/img: no test images") as err:
        check_inputs(root)
    assert "--data" in str(err.value)
    assert check_inputs(root, splits=("val",)) == root.resolve()
    (root / "val" / "img" / "w.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"val/mask: no mask for 1 of 2 val images \(first: w.png\)"):
        check_inputs(root, splits=("val",))
    (root / "val" / "img" / "w.png").unlink()
    for name in ("a.png", "b.png"):
        (root / "train" / name).unlink()
    with pytest.raises(FileNotFoundError, match="no training images"):
        check_inputs(root, splits=("val",))
    assert check_inputs(root, splits=("val",), train=False) == root.resolve()  # evaluate needs no train/


def test_run_kind_tells_the_stages_apart(tmp_path):
    stage1, stage2, unfinished, empty = (tmp_path / n for n in ("s1", "s2", "u", "e"))
    for folder, files in [(stage1, ["classifier.pt"]), (stage2, ["metrics.json", "best.pt"]), (empty, [])]:
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes(b"")
    unfinished.mkdir()
    (unfinished / "config.json").write_text(json.dumps({"masks": "pm", "data_root": "/d"}))
    assert run_kind(stage1) == ("stage 1", ["classifier.pt"])
    assert run_kind(stage2) == ("stage 2", ["metrics.json", "best.pt"])
    assert run_kind(unfinished) == ("stage 2", ["config.json"])
    assert run_kind(empty) == (None, [])
    with pytest.raises(
        ValueError, match=r"s2 is a stage 2 run folder \(it holds metrics.json, best.pt\); expected X"
    ):
        require_run(stage2, "stage 1", "X")
    require_run(stage1, "stage 1", "X")
    require_run(empty, "stage 1", "X")  # not a run at all: the caller's own message (missing config.json)


def test_start_removes_the_temporary_files_of_killed_writes(tmp_path):
    from arml.runtime import TEMP_PREFIX

    run = _folder(tmp_path / "run")
    run.start()
    run.save_last({"epoch": 0})
    (tmp_path / "run" / f"{TEMP_PREFIX}last.x1y2.pt").write_bytes(b"half a checkpoint")
    resumed = _folder(tmp_path / "run")
    resumed.start()
    assert resumed.load_last()["epoch"] == 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "last.pt"]


def test_a_damaged_checkpoint_is_named_with_the_way_out(tmp_path):
    run = _folder(tmp_path / "run")
    run.start()
    run.save_last({"epoch": 0})
    (tmp_path / "run" / "last.pt").write_bytes(b"not a checkpoint")  # e.g. a damaged copy
    with pytest.raises(ValueError, match=r"last.pt cannot be read \(\w+Error: .*\); pass --restart"):
        _folder(tmp_path / "run").load_last()


def test_a_finished_run_found_on_moved_data_records_where_the_data_is_now(tmp_path):
    old = _dataset(tmp_path / "old")
    run = _data_folder(tmp_path / "run", _record(old))
    run.start()
    run.write_json("done.json", {})
    moved = tmp_path / "moved"
    old.rename(moved)
    again = _data_folder(tmp_path / "run", _record(moved), device="cuda")
    assert again.finished
    again.refresh()
    assert json.loads((tmp_path / "run" / "data.json").read_text())["data_root"] == str(moved.resolve())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["device"] == "cuda"
    unfinished = _data_folder(tmp_path / "other", _record(moved))
    unfinished.refresh()  # not finished: nothing to refresh, nothing written
    assert not (tmp_path / "other").exists()


def test_validate_inputs_decodes_a_split_once_per_process_while_its_files_stay(tiny_root, monkeypatch):
    import arml.runfolder as runfolder

    calls = []
    real = runfolder.validate_split
    monkeypatch.setattr(runfolder, "validate_split", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    monkeypatch.setattr(runfolder, "_VALIDATED", set())
    runfolder.validate_inputs(tiny_root, "luad")
    runfolder.validate_inputs(tiny_root, "luad")
    assert calls == ["train", "val", "test"]  # the second call decoded nothing
    mask = sorted((tiny_root / "val" / "mask").glob("*.png"))[0]
    mask.write_bytes(mask.read_bytes()[:40])  # truncated: another size, so checked again and refused
    with pytest.raises(ValueError, match=r"the val split fails the data check"):
        runfolder.validate_inputs(tiny_root, "luad")
    assert calls == ["train", "val", "test", "val"]
