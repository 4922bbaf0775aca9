"""Both stages under ``torchrun`` with 2 CPU processes (``gloo``) on a 3-image dataset (:mod:`arml.distributed`).

The processes are started as a user starts them (``python -m torch.distributed.run … -m arml train-…``).
A ``sitecustomize`` put on ``PYTHONPATH`` instruments them: every process but rank 0 fails the moment it
writes a run file (all go through :func:`arml.runtime.atomic_write`), and ``ARML_TEST_NO_DROPOUT`` turns
the PSPNet's Dropout off, whose draws come from each process's own generator.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from arml import distributed
from arml.datasets import format_train_name, write_mask

pytestmark = pytest.mark.slow

SITECUSTOMIZE = """
import os

if os.environ.get("RANK", "0") != "0":
    import arml.runtime

    def _refuse(path, write):
        raise AssertionError(f"rank {os.environ['RANK']} wrote {path}")

    arml.runtime.atomic_write = _refuse
if os.environ.get("ARML_TEST_NO_DROPOUT"):
    import torch
    import arml.recipes

    _build = arml.recipes.build_models

    def _no_dropout(config):
        models = _build(config)
        for module in (m for model in models for m in model.modules()):
            if isinstance(module, torch.nn.Dropout2d):
                module.p = 0.0
        return models

    arml.recipes.build_models = _no_dropout
"""
STAGE1 = ["train-cls", "--profile", "quick", "--device", "cpu", "--quiet"]
STAGE2 = ["train-seg", "--profile", "quick", "--masks", "train_gt", "--device", "cpu", "--quiet"]
STAGE2 += ["--encoder-depth", "3", "--probe-images", "0", "--eval-batch-size", "2"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    hooks = tmp_path_factory.mktemp("hooks")
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])}


def _cmd(*args: str, processes: int = 2) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "arml", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
    ] + [
        "-m",
        "arml",
        *args,
    ]


def _run(cmd: list[str], env: dict) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_world_from_the_environment_and_bad_values():
    assert distributed.detect({}) == distributed.SINGLE and not distributed.SINGLE.enabled
    world = distributed.detect({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (world.size, world.rank, world.local_rank, world.enabled, world.is_main) == (4, 3, 1, True, False)
    with pytest.raises(ValueError, match="must be integers"):
        distributed.detect({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        distributed.detect({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ValueError, match="each process uses cuda:LOCAL_RANK"):
        distributed.process_device("cuda:1", world)


def test_global_batch_sampler_splits_the_single_process_batches():
    n, batch = 11, 4
    single = torch.utils.data.DataLoader(
        range(n), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    expected = [b.tolist() for b in single]  # 4, 4, 3 images
    for size in (1, 2):
        shares = []
        for rank in range(size):
            world = distributed.World(size, rank, rank)
            sampler = distributed.GlobalBatchSampler(
                n, batch, drop_last=False, generator=torch.Generator().manual_seed(3), world=world
            )
            # the DataLoader draws its worker seed first, as in the single-process loader
            loader = torch.utils.data.DataLoader(range(n), batch_sampler=sampler, generator=sampler.generator)
            shares.append([b.tolist() for b in loader])
        assert [sum(parts, []) for parts in zip(*shares, strict=True)] == expected
    assert [len(b) for b in shares[1]] == [2, 2, 1]
    two = distributed.World(2, 0, 0)
    with pytest.raises(ValueError, match="divisible by the 2 processes"):
        distributed.GlobalBatchSampler(8, 3, drop_last=True, generator=torch.Generator(), world=two)
    with pytest.raises(ValueError, match="end with a batch of 1"):
        distributed.GlobalBatchSampler(9, 4, drop_last=False, generator=torch.Generator(), world=two)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_one_step_of_two_processes_equals_one_process_on_the_global_batch(stage, tiny_root, tmp_path, env):
    """3 images, global batch 4: one step, the images split 2 + 1 over the processes (uneven on purpose)."""
    if stage == "stage1":  # per-image augmentations draw from each process's generator: off here
        args = [*STAGE1, "--no-hflip", "--no-vflip", "--no-blur", "--color-jitter", "0"]
    else:  # stage 2 draws its augmentations for the global batch: left on; float32 (bf16 rounds at 1e-5)
        args = [*STAGE2, "--no-amp"]
    args = [*args, "--data", str(tiny_root), "--epochs", "1", "--batch-size", "4"]
    env = {**env, "ARML_TEST_NO_DROPOUT": "1"}
    _run(_cmd(*args, "--out", str(tmp_path / "one"), processes=1), env)
    _run(_cmd(*args, "--out", str(tmp_path / "two")), env)
    name = "classifier.pt" if stage == "stage1" else "best.pt"
    one, two = (torch.load(tmp_path / d / name, weights_only=False) for d in ("one", "two"))
    one, two = ([s["model"]] if "model" in s else s["models"] for s in (one, two))
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5, rtol=0), key
    loss = [
        json.loads((tmp_path / d / "history.json").read_text())["history"][0]["loss"] for d in ("one", "two")
    ]
    assert loss[0] == pytest.approx(loss[1], rel=1e-5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The conftest's tiny dataset (3 training images, 2 val and 2 test pairs, 16×16), once for the module."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    for i, label in enumerate([(1, 0, 0, 1), (0, 1, 0, 0), (1, 1, 1, 0)]):
        name = format_train_name(f"p{i}-0-0-", label, "luad")
        _rgb(root / "train" / name, value=60 * i)
        write_mask(root / "train_gt" / name, np.full((16, 16), i % 4, dtype=np.uint8))
    for split in ("val", "test"):
        for i in range(2):
            _rgb(root / split / "img" / f"v{i}.png")
            mask = np.zeros((16, 16), dtype=np.uint8)
            mask[:8] = 4
            mask[8:, :8] = i + 1
            write_mask(root / split / "mask" / f"v{i}.png", mask)
    return root


def _rgb(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def two_process_runs(tiny, tmp_path_factory, env):
    """A 2-epoch, 2-process run of each stage (global batch 2: one image per process)."""
    out = tmp_path_factory.mktemp("runs")
    for stage, args in (("cls", STAGE1), ("seg", STAGE2)):
        stdout = _run(
            _cmd(*args, "--data", str(tiny), "--epochs", "2", "--batch-size", "2", "--out", str(out / stage)),
            env,
        )
        (out / f"{stage}.log").write_text(stdout)
    return out


def test_two_processes_run_each_stage_and_only_rank_0_writes(two_process_runs):
    cls, seg = two_process_runs / "cls", two_process_runs / "seg"
    assert _files(cls) == {
        "config.json",
        "data.json",
        "last.pt",
        "history.json",
        "classifier.pt",
        "weights.json",
    }
    assert _files(seg) == {"config.json", "data.json", "last.pt", "best.pt", "history.json", "metrics.json"}
    for run in (cls, seg):
        history = json.loads((run / "history.json").read_text())
        assert history["world_size"] == 2 and [h["epoch"] for h in history["history"]] == [0, 1]
        last = torch.load(run / "last.pt", weights_only=False)
        assert last["world_size"] == 2 and len(last["rank_rng"]) == 2
    metrics = json.loads((seg / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and set(metrics) >= {"F_a", "F_b", "F_c", "ensemble"}
    # the command's report is printed once (by rank 0), not once per process
    cls_log, seg_log = ((two_process_runs / f"{s}.log").read_text() for s in ("cls", "seg"))
    assert cls_log.count("data: ") == 1 and cls_log.count("stage-1 classifier (") == 1
    assert seg_log.count("data: ") == 1 and seg_log.count("ensemble") == 1


def _kill_group_when(cmd: list[str], env: dict, ready, timeout: float = 300.0) -> bool:
    """Start ``cmd`` in its own process group; SIGKILL the whole group (launcher and workers) once ``ready()``."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return False


def test_killed_two_process_run_resumes_to_the_uninterrupted_result(two_process_runs, tiny, tmp_path, env):
    killed = tmp_path / "seg"
    cmd = _cmd(*STAGE2, "--data", str(tiny), "--epochs", "2", "--batch-size", "2", "--out", str(killed))
    assert _kill_group_when(cmd, env, lambda: (killed / "last.pt").exists())
    assert not (killed / "metrics.json").exists()
    copy = shutil.copytree(killed, tmp_path / "copy")
    _run(cmd, env)
    whole = json.loads((two_process_runs / "seg" / "metrics.json").read_text())
    again = json.loads((killed / "metrics.json").read_text())
    for key in ("F_a", "F_b", "F_c", "ensemble", "best_epoch", "val_miou", "world_size"):
        assert again[key] == whole[key]
    # the killed run's last.pt holds per-process random states: one process refuses to continue it
    single = subprocess.run(
        _cmd(
            *STAGE2,
            "--data",
            str(tiny),
            "--epochs",
            "2",
            "--batch-size",
            "2",
            "--out",
            str(copy),
            processes=1,
        ),
        capture_output=True,
        text=True,
        env=env,
    )
    assert single.returncode == 2 and "written by a run of 2 process(es), this one has 1" in single.stderr
