"""Run plans (arml.plan, ``arml plan`` / ``run-plan`` / ``run-step``).

The fast tests check the plan as data: phases in dependency order, no duplicates, ``--only``, step names that
parse back. The slow one executes the quick profile's plan with two workers and then the notebooks against
that cache, and checks that the notebooks made no run folder the plan had not made.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arml.cli import build_parser, main
from arml.paper import NOISE_METHODS, OMEGA_SWEEP, RELATION_SWEEP
from arml.plan import (
    NOTEBOOK_REQUESTS,
    Plan,
    Step,
    StepFailed,
    build_plan,
    format_value,
    noise,
    parse_step,
    plan_json,
    plan_lines,
    pseudo_masks,
    run_plan,
    stage1,
)
from arml.profiles import get_profile

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_plan():
    return build_plan("quick")


def test_every_step_comes_after_the_steps_it_needs(quick_plan):
    position = {step: i for i, step in enumerate(quick_plan.steps)}
    assert quick_plan.steps[0] == Step("data")
    assert [s.phase for s in quick_plan.steps] == sorted(s.phase for s in quick_plan.steps)
    for step in quick_plan.steps:
        for parent in step.parents:
            assert parent in position, f"{step.id} needs {parent.id}, which is not in the plan"
            assert parent.phase < step.phase and position[parent] < position[step]


def test_no_step_appears_twice(quick_plan):
    ids = [s.id for s in quick_plan.steps]
    assert len(ids) == len(set(ids))
    # the CE row is asked by 04 (N/A), 05 (CE), 06 (+ARS) and 07 (CAM masks, CE): one step for seed 0
    ce = [
        s for s in quick_plan.steps if s.kind == "stage2" and s.options == OMEGA_SWEEP["N/A"] and s.seed == 0
    ]
    ce_on_ars = [s for s in ce if s.source == pseudo_masks(stage1(ars="both"), method="gradcam")]
    assert len(ce_on_ars) == 1
    assert quick_plan.notebooks[ce_on_ars[0]] == [
        "04_swv_omega_sweep",
        "05_srm_loss_comparison",
        "06_final_benchmark",
        "07_noise_lab",
    ]


def test_requests_of_the_same_config_are_one_step(monkeypatch):
    epochs = get_profile("quick").cls["epochs"]  # spelled out, the profile's value: the same run
    monkeypatch.setitem(NOTEBOOK_REQUESTS, "01_cam_baselines", lambda ctx: [stage1(ars="both")])
    monkeypatch.setitem(NOTEBOOK_REQUESTS, "02_ars_ablation", lambda ctx: [stage1(ars="both", epochs=epochs)])
    plan = build_plan("quick", only="01,02")
    assert [s.kind for s in plan.steps] == ["data", "stage1"]
    assert plan.notebooks[plan.steps[1]] == ["01_cam_baselines", "02_ars_ablation"]


def test_counts_of_the_quick_plan_by_hand(quick_plan):
    profile = get_profile("quick")
    by_kind = {k: sum(s.kind == k for s in quick_plan.steps) for k in ("stage1", "pm", "noise", "stage2")}
    assert by_kind["stage1"] == 6  # notebook 02's six ARS variants cover 01, 03-07
    assert by_kind["pm"] == 3  # plain Grad-CAM, plain CAM, ARS Grad-CAM
    assert by_kind["noise"] == len(profile.noise_kinds) * len(profile.noise_rates)
    assert by_kind["stage2"] == 43  # see test_counts_of_04_05 and the module docstring of arml.plan


def test_only_04_and_04_05_by_hand():
    only_04 = build_plan("quick", only="04")
    assert [s.kind for s in only_04.steps] == ["data", "stage1", "pm"] + ["stage2"] * (len(OMEGA_SWEEP) + 1)
    both = build_plan("quick", only="4,05")
    # 05 adds KL, CRL, L_pt and SWV only; its CE and L_st rows are 04's N/A and ω = 2
    assert sum(s.kind == "stage2" for s in both.steps) == len(OMEGA_SWEEP) + 1 + len(RELATION_SWEEP) + 1 - 2
    assert {s for s in both.steps if s.kind != "stage2"} == {s for s in only_04.steps if s.kind != "stage2"}


def test_only_filters_notebooks_and_06_uses_the_profile_seeds():
    plan = build_plan("quick", only="06")
    assert {nb for names in plan.notebooks.values() for nb in names} == {"06_final_benchmark"}
    assert not any(s.kind == "noise" for s in plan.steps)
    rows = 5 + 1 + 2  # Table 2, the released recipe, the two reference rows
    assert sum(s.kind == "stage2" for s in plan.steps) == rows * len(get_profile("quick").seeds)
    fully = [s for s in plan.steps if s.source == "train_gt"]
    assert {s.options["epochs"] for s in fully} == {3 * get_profile("quick").seg["epochs"]}


@pytest.mark.parametrize("only", ["08", "1,2,x", "0"])
def test_bad_only_names_the_notebooks(only, capsys):
    with pytest.raises(ValueError, match="choose from"):
        build_plan("quick", only=only)
    assert main(["plan", "--profile", "quick", "--only", only]) == 2
    err = capsys.readouterr().err
    assert "arml plan: error:" in err and "01_cam_baselines" in err


def test_data_without_truth_drops_the_truth_rows(tmp_path):
    (tmp_path / "train").mkdir()
    plan = build_plan("quick", only="06,07", data=tmp_path)
    assert not any(s.kind == "noise" or s.source == "train_gt" for s in plan.steps)
    assert all(f"--data {tmp_path.resolve()} --dataset luad" in plan.command(s) for s in plan.steps)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_plan("quick", data=tmp_path / "missing")


def test_lines_parse_back_to_the_same_steps(quick_plan):
    parser = build_parser()
    commands = [line for line in plan_lines(quick_plan) if not line.startswith("#")]
    assert len(commands) == len(quick_plan.steps)
    for line, step in zip(commands, quick_plan.steps, strict=True):
        words = shlex.split(line)
        assert words[:2] == ["arml", "run-step"]
        args = parser.parse_args(words[1:])
        assert args.profile == "quick" and args.func.__name__ == "_cmd_run_step"
        assert parse_step(args.step) == step


def test_phase_headers_count_their_lines(quick_plan):
    lines = plan_lines(quick_plan)
    headers = [i for i, line in enumerate(lines) if line.startswith("# phase")]
    for start, end in zip(headers, [*headers[1:], len(lines)], strict=True):
        n = int(lines[start].split("(")[1].split()[0])
        assert n == end - start - 1, lines[start]


def test_json_has_the_same_steps_as_the_lines(quick_plan):
    payload = json.loads(plan_json(quick_plan))
    steps = [s for phase in payload["phases"] for s in phase["steps"]]
    assert [s["command"] for s in steps] == [line for line in plan_lines(quick_plan) if line[0] != "#"]
    assert [p["name"] for p in payload["phases"]] == ["data", "stage 1", "pseudo masks", "stage 2"]
    pm = next(s for s in steps if s["kind"] == "pm")
    assert pm["needs"] == [pm["id"].split(":", 2)[2]]


@pytest.mark.parametrize(
    ("step", "text"),
    [
        (stage1(ars=None), "stage1:ars=none:seed=0"),
        (noise("swap", 0.2, seed=3), "noise:kind=swap,rate=0.2:seed=3"),
        (
            Step("stage2", (("omega", math.inf), ("peers", 1)), 2, pseudo_masks(stage1(), method="cam")),
            "stage2:omega=inf,peers=1:seed=2:pm:method=cam:stage1:-:seed=0",
        ),
        (Step("stage2", (("epochs", 6),), 0, "train_gt"), "stage2:epochs=6:seed=0:masks=train_gt"),
        (Step("pm", (("flip", True),), None, stage1()), "pm:flip=true:stage1:-:seed=0"),
    ],
)
def test_step_names_round_trip(step, text):
    assert step.id == text
    assert parse_step(text) == step


def test_every_override_of_the_notebooks_round_trips():
    for method in NOISE_METHODS.values():
        step = Step("stage2", tuple(sorted(method.items())), 0, "train_gt")
        assert parse_step(step.id) == step


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stage3:ars=both:seed=0", "starts with 'stage3'"),
        ("stage1:arz=both:seed=0", "no field 'arz'"),
        ("stage1:epochs=many:seed=0", "wants a int"),
        ("stage1:ars=both", "incomplete"),
        ("stage1:ars=both:seed=x", "expected seed=N"),
        ("pm:method=cam:noise:kind=swap,rate=0.1:seed=0", "made from a stage1 step"),
        ("stage2:-:seed=0:stage1:-:seed=0", "pm or noise step"),
        ("data:x", "takes no options"),
    ],
)
def test_bad_step_names_say_what_is_allowed(text, message):
    with pytest.raises(ValueError, match=message):
        parse_step(text)


def test_values_that_cannot_be_named_are_refused():
    with pytest.raises(ValueError, match="without , : ="):
        format_value("a,b")
    with pytest.raises(ValueError, match="cannot write"):
        format_value((1.0, 0.5))


def test_run_step_before_its_input_names_the_missing_step(quick_copy, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARML_RUNS", str(tmp_path / "runs"))
    code = main(["run-step", "--profile", "quick", "--data", str(quick_copy), "--quiet", "pm:method=cam:stage1:ars=none:seed=0"])  # fmt: skip
    assert code == 2
    assert "run step 'stage1:ars=none:seed=0' (phase 1) first" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("workers", "overrides", "error"),
    [
        (1, OMEGA_SWEEP["N/A"], "FileNotFoundError"),  # trained in this process
        (2, OMEGA_SWEEP["N/A"], "FileNotFoundError"),  # in spawned workers (two steps, one thread each)
        (1, {"peers": 1}, "ValueError: SegConfig.peers=1"),  # a bad config, found before training
    ],
)
def test_run_plan_names_the_failed_step(quick_copy, tmp_path, workers, overrides, error, monkeypatch):
    # stage 2 as the notebooks run it with 2 workers on 2 cores: one thread each, so two steps at once
    monkeypatch.setenv("ARML_WORKERS", str(workers))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    bad = [Step("stage2", tuple(sorted(overrides.items())), seed, "no-such-masks") for seed in range(workers)]
    plan = Plan("quick", [Step("data"), *bad], {}, str(quick_copy))
    with pytest.raises(StepFailed) as failed:
        run_plan(plan, workers, runs=tmp_path / "runs", progress=False, log=lambda _: None)
    first, *rest = str(failed.value).splitlines()
    step = next(s for s in bad if first.startswith(f"step {s.id} "))
    assert first.startswith(f"step {step.id} (phase 3: stage 2) failed: {error}")
    assert rest == [f"rerun it alone: {plan.command(step)}"]
    assert not list((tmp_path / "runs").glob("*/quick/stage2-*"))


def test_steps_get_the_notebooks_thread_counts(quick_copy, tmp_path, monkeypatch):
    """Stage 2 gets cpu_count // workers threads when the notebooks train it in workers, everything else (and
    stage 2 without workers) torch's default: what a notebook kernel and arml.experiments.train_runs use."""
    import torch

    from arml.plan import default_threads, notebook_threads, open_experiment

    if torch.cuda.is_available():
        pytest.skip("thread counts are only set on the CPU")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    ex = open_experiment("quick", str(quick_copy), "luad", str(tmp_path / "runs"))
    s1 = stage1(ars="both")
    seg = Step("stage2", (), 0, pseudo_masks(s1, method="gradcam"))
    for workers, expected in [("1", default_threads()), ("2", 4), ("3", 2), ("16", 1)]:
        monkeypatch.setenv("ARML_WORKERS", workers)
        assert notebook_threads(ex, seg) == expected
        assert notebook_threads(ex, s1) == notebook_threads(ex, s1.source or s1) == default_threads()
        assert notebook_threads(ex, noise("swap", 0.1)) == default_threads()


@pytest.mark.slow
def test_a_plan_computes_the_notebooks_numbers_bit_for_bit(quick_synth, tmp_path, monkeypatch):
    """run-plan --workers 2 against the calls a notebook makes (stage 2 in 2 workers, as the cpu profile): the
    same classifier weights, pseudo masks and stage-2 metrics. Before each step got the notebooks' thread
    count, the plan trained stage 1 with cpu_count // workers threads and its floats differed."""
    import shutil

    from arml.experiments import Experiment

    monkeypatch.setenv("ARML_WORKERS", "2")
    grid = {key: NOISE_METHODS[key] for key in ("CE", "SWV+SRM")}  # one network; three peers
    data = {side: shutil.copytree(quick_synth, tmp_path / side / "data") for side in ("plan", "notebook")}

    s1 = stage1(ars="both")
    pm = pseudo_masks(s1, method="gradcam")
    seg = [Step("stage2", tuple(sorted(cfg.items())), seed, pm) for cfg in grid.values() for seed in (0, 1)]
    plan = Plan("quick", [Step("data"), s1, pm, *seg], {}, str(data["plan"]))
    run_plan(plan, workers=2, runs=tmp_path / "plan" / "runs", progress=False, log=lambda _: None)

    ex = Experiment("quick", data["notebook"], runs=tmp_path / "notebook" / "runs", progress=False)
    run = ex.classifier(0, ars="both")
    masks = ex.pseudo_masks(run, method="gradcam")
    scores = ex.segmenter_grid({key: (masks["name"], cfg) for key, cfg in grid.items()}, seeds=(0, 1))

    def weights(side):
        (folder,) = (tmp_path / side / "runs").glob("*/quick/stage1-*")
        return json.loads((folder / "weights.json").read_text())

    def masks_of(side):
        (folder,) = (data[side] / "train_PM").glob("pm-*")
        return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}

    def metrics(side):
        found = {}
        for folder in (tmp_path / side / "runs").glob("*/quick/stage2-*"):
            config = json.loads((folder / "config.json").read_text())
            scores = json.loads((folder / "metrics.json").read_text())
            for volatile in ("seconds_per_epoch", "data_root"):
                scores.pop(volatile)
            found[(config["peers"], config["seed"])] = scores
        return found

    assert weights("plan") == weights("notebook")
    assert masks_of("plan") == masks_of("notebook") and len(masks_of("plan")) > 0
    assert metrics("plan") == metrics("notebook") and len(metrics("plan")) == 4
    assert sorted(s["F_a"]["miou"] for rows in scores.values() for s in rows) == sorted(
        m["F_a"]["miou"] for m in metrics("plan").values()
    )


@pytest.mark.slow
def test_the_plan_makes_every_run_the_notebooks_use(tmp_path):
    """run-plan (2 workers), then all notebooks on that cache: they find every run and make none."""
    from arml.reproduce import run_notebooks

    env = {"ARML_DATA": str(tmp_path / "data"), "ARML_RUNS": str(tmp_path / "runs")}

    def folders() -> dict[str, float]:
        found = [
            *(tmp_path / "runs").glob("*/quick/stage[12]-*"),
            *(tmp_path / "data").glob("*/*/train_PM/*"),
        ]
        done = ("classifier.pt", "metrics.json", "manifest.json")
        return {str(p.relative_to(tmp_path)): max((p / f).stat().st_mtime for f in done if (p / f).exists()) for p in found}  # fmt: skip

    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "arml", "run-plan", "--profile", "quick", "--workers", "2", "--quiet"],
        env={**os.environ, **env},
        cwd=tmp_path,
        check=True,
    )
    planned = folders()
    plan = build_plan("quick")
    assert len(planned) == len(plan.steps) - 1  # one folder per step but the data step
    saved = {k: os.environ.get(k) for k in [*env, "ARML_PROFILE"]}
    os.environ.update(env)
    try:
        runs = run_notebooks("quick", out=tmp_path / "out", progress=False)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    assert all(r.ok for r in runs), [r.error for r in runs if not r.ok]
    after = folders()
    assert sorted(set(after) - set(planned)) == [], "the notebooks made runs the plan does not have"
    # stage-1 and stage-2 runs were read, not retrained (pseudo-mask manifests are rewritten on reuse)
    trained_again = [k for k in planned if "train_PM" not in k and after[k] != planned[k]]
    assert trained_again == []
    print(f"plan + notebooks: {time.perf_counter() - started:.0f} s")
