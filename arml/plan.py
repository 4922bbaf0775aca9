"""Run plans: every stage run the notebooks ask for, one self-contained command line each (``arml plan``).

The notebooks train their runs through :class:`~arml.experiments.Experiment`, one after another on one
device. A plan lists the same runs as *steps*, without duplicates, in dependency order:

* phase 0 ``data`` — make the built-in synthetic dataset (or check ``--data``) once, before jobs read it;
* phase 1 ``stage1:<overrides>:seed=N`` — a classifier (:meth:`Experiment.classifier`);
* phase 2 ``pm:<overrides>:<stage-1 step>`` — its pseudo masks (:meth:`Experiment.pseudo_masks`), and
  ``noise:kind=K,rate=R:seed=N`` — the true masks corrupted by :func:`arml.noise.corrupt_dataset`
  (notebook 07);
* phase 3 ``stage2:<overrides>:seed=N:<masks>`` — three peers trained with Eq. (9) on the masks of a
  phase-2 step, or on ``masks=train_gt``.

``<overrides>`` are the config fields the notebook sets, ``key=value`` joined by commas in key order (``-``
for none), parsed back with the field types of :class:`~arml.stage1.ClsConfig`,
:class:`~arml.pseudo_masks.PseudoMaskConfig` or :class:`~arml.stage2.SegConfig`.

A pseudo-mask folder is named after its classifier's weights, so no line can name it in advance: a step
names its inputs symbolically and ``arml run-step`` resolves them from the cache when it runs, without
writing to them. Every line is complete once the lines of the earlier phases have finished, so a scheduler
runs one job array per phase, each depending on the previous one (``docs/slurm_example.sh``), and
``arml run-plan --workers N`` does the same on one machine. The notebooks then find every run cached.

>>> plan = build_plan("quick", only="04")                                 # doctest: +SKIP
>>> plan_lines(plan)[3:5]                                                 # doctest: +SKIP
['# phase 1: stage 1 (1 run)', 'arml run-step --profile quick stage1:ars=both:seed=0']
"""

from __future__ import annotations

import functools
import json
import math
import os
import shlex
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from arml.paper import (
    ABLATION,
    ARS_VARIANTS,
    NOISE_METHODS,
    OFFICIAL_RECIPE,
    OMEGA_SWEEP,
    REFERENCE_ROWS,
    RELATION_SWEEP,
    SWV_ONLY,
    SWV_PIXELS,
)
from arml.profiles import Profile, get_profile

SEED = 0
"""The notebooks' ``SEED`` parameter (stage 1 and the noise draws); ``arml reproduce`` keeps it."""

PHASES = ("data", "stage 1", "pseudo masks", "stage 2")
KINDS = {"data": 0, "stage1": 1, "pm": 2, "noise": 2, "stage2": 3}
NOISE_FIELDS = {"kind": str, "rate": float}
_SEPARATORS = (",", ":", "=")


# ------------------------------------------------------------------------------------------------ steps
@dataclass(frozen=True)
class Step:
    """One stage run of a plan.

    Attributes:
        kind: ``"data"``, ``"stage1"``, ``"pm"``, ``"noise"`` or ``"stage2"``.
        overrides: ``(field, value)`` pairs in field-name order: what the notebook passes to the config.
        seed: the run's seed (stage 1, noise, stage 2); None for ``data`` and ``pm``.
        source: the input: the stage-1 step of ``pm``; the ``pm``/``noise`` step or a mask folder name
            (``"train_gt"``) of ``stage2``.
    """

    kind: str
    overrides: tuple[tuple[str, object], ...] = ()
    seed: int | None = None
    source: Step | str | None = None

    @property
    def phase(self) -> int:
        return KINDS[self.kind]

    @property
    def options(self) -> dict:
        return dict(self.overrides)

    @property
    def id(self) -> str:
        """The step's name on a command line (see the module docstring); :func:`parse_step` inverts it."""
        if self.kind == "data":
            return "data"
        parts = [self.kind, ",".join(f"{k}={format_value(v)}" for k, v in self.overrides) or "-"]
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        if isinstance(self.source, Step):
            parts.append(self.source.id)
        elif self.source is not None:
            parts.append(f"masks={self.source}")
        return ":".join(parts)

    @property
    def parents(self) -> list[Step]:
        """The steps this one needs, nearest first (its source, that one's source, ...)."""
        return [self.source, *self.source.parents] if isinstance(self.source, Step) else []


def _step(kind: str, overrides: dict, seed: int | None = None, source: Step | str | None = None) -> Step:
    return Step(kind, tuple(sorted(overrides.items())), seed, source)


def format_value(value) -> str:
    """A config value as text in a step name: ``none``, ``true``/``false``, ``inf``, ``2.0``, ``st``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "inf" if value == math.inf else "-inf" if value == -math.inf else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value and not any(s in value for s in _SEPARATORS):
        return value
    raise ValueError(
        f"cannot write {value!r} in a step name: use None, a bool, a number or a string without , : ="
    )


def _config_class(kind: str):
    if kind == "stage1":
        from arml.stage1 import ClsConfig

        return ClsConfig
    if kind == "pm":
        from arml.pseudo_masks import PseudoMaskConfig

        return PseudoMaskConfig
    from arml.stage2 import SegConfig

    return SegConfig


def _field_types(kind: str) -> dict[str, object]:
    if kind == "noise":
        return NOISE_FIELDS
    cls = _config_class(kind)
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def parse_value(text: str, kind, name: str):
    """``text`` as a value of the type hint ``kind`` (``X | None`` takes ``none``); the inverse of
    :func:`format_value`."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = len(args) < len(typing.get_args(kind))
    if optional and text == "none":
        return None
    base = args[0] if optional and len(args) == 1 else kind
    try:
        if base is bool:
            if text not in ("true", "false"):
                raise ValueError
            return text == "true"
        if base in (int, float, str):
            return base(text)
    except ValueError:
        raise ValueError(f"field {name!r} wants a {base.__name__}, got {text!r}") from None
    raise ValueError(f"field {name!r} ({kind}) cannot be set in a step name")


def _parse_overrides(kind: str, text: str) -> dict:
    if text == "-":
        return {}
    types = _field_types(kind)
    out = {}
    for item in text.split(","):
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"expected key=value in {text!r}, got {item!r}")
        if name not in types:
            raise ValueError(f"{kind} has no field {name!r}; fields: {', '.join(types)}")
        out[name] = parse_value(value, types[name], name)
    return out


def _parse_seed(text: str, step: str) -> int:
    if not text.startswith("seed=") or not text[5:].isdigit():
        raise ValueError(f"expected seed=N in step {step!r}, got {text!r}")
    return int(text[5:])


def parse_step(text: str) -> Step:
    """A :class:`Step` from its name (``Step.id``), e.g. ``stage1:ars=both:seed=0``.

    Raises:
        ValueError: an unknown kind or field, a bad value, or a source of the wrong kind; the message
            names what is allowed.
    """
    kind = text.partition(":")[0]
    if kind not in KINDS:
        raise ValueError(f"step {text!r} starts with {kind!r}; steps start with one of {list(KINDS)}")
    if kind == "data":
        if text != "data":
            raise ValueError(f"the data step takes no options, got {text!r}")
        return Step("data")
    parts = text.split(":", 3 if kind == "stage2" else 2)
    if len(parts) < (4 if kind == "stage2" else 3):
        raise ValueError(f"step {text!r} is incomplete; e.g. stage1:ars=both:seed=0, see `arml plan`")
    overrides = _parse_overrides(kind, parts[1])
    if kind in ("stage1", "noise"):
        return _step(kind, overrides, _parse_seed(parts[2], text))
    if kind == "pm":
        source = parse_step(parts[2])
        if source.kind != "stage1":
            raise ValueError(f"pseudo masks are made from a stage1 step, got {parts[2]!r}")
        return _step(kind, overrides, None, source)
    seed, rest = _parse_seed(parts[2], text), parts[3]
    if rest.startswith("masks="):
        return _step(kind, overrides, seed, rest[len("masks=") :])
    source = parse_step(rest)
    if source.kind not in ("pm", "noise"):
        raise ValueError(f"stage 2 trains on a pm or noise step or masks=NAME, got {rest!r}")
    return _step(kind, overrides, seed, source)


# ------------------------------------------------------------------------- the notebooks' requests
def stage1(seed: int = SEED, **overrides) -> Step:
    """:meth:`Experiment.classifier` ``(seed, **overrides)``."""
    return _step("stage1", overrides, seed)


def pseudo_masks(run: Step, **overrides) -> Step:
    """:meth:`Experiment.pseudo_masks` ``(run, **overrides)``."""
    return _step("pm", overrides, None, run)


def noise(kind: str, rate: float, seed: int = SEED) -> Step:
    """:func:`arml.noise.corrupt_dataset` ``(root, kind, rate, seed)``."""
    return _step("noise", {"kind": kind, "rate": float(rate)}, seed)


def segmenter_grid(grid: dict[str, tuple[Step | str, dict]], seeds) -> list[Step]:
    """:meth:`Experiment.segmenter_grid`: every row of ``grid`` (``key → (masks, overrides)``) per seed."""
    return [_step("stage2", cfg, seed, masks) for masks, cfg in grid.values() for seed in seeds]


@dataclass(frozen=True)
class Context:
    """What a notebook's requests depend on besides the constants: the profile and whether the data has
    the training truth ``train_gt/`` (synthetic data only)."""

    profile: Profile
    truth: bool = True


def notebook_01(ctx: Context) -> list[Step]:
    """01_cam_baselines: the plain classifier and its Grad-CAM and CAM pseudo masks."""
    plain = stage1(ars=None)
    return [plain, pseudo_masks(plain, method="gradcam"), pseudo_masks(plain, method="cam")]


def notebook_02(ctx: Context) -> list[Step]:
    """02_ars_ablation: one classifier per ARS variant, Grad-CAM pseudo masks of "both"."""
    runs = {name: stage1(**cfg) for name, cfg in ARS_VARIANTS.items()}
    return [*runs.values(), pseudo_masks(runs["both"], method="gradcam")]


def notebook_03(ctx: Context) -> list[Step]:
    """03_pseudo_mask_quality: ARS + Grad-CAM and plain CAM pseudo masks."""
    both, plain = stage1(ars="both"), stage1(ars=None)
    return [both, plain, pseudo_masks(both, method="gradcam"), pseudo_masks(plain, method="cam")]


def _ars_gradcam() -> Step:
    return pseudo_masks(stage1(ars="both"), method="gradcam")


def notebook_04(ctx: Context) -> list[Step]:
    """04_swv_omega_sweep: Table 3's ω grid and the pixel normalisation over ``sweep_seeds``."""
    pm = _ars_gradcam()
    grid = {key: (pm, cfg) for key, cfg in OMEGA_SWEEP.items()} | {"pixels": (pm, SWV_PIXELS)}
    return segmenter_grid(grid, ctx.profile.sweep_seeds)


def notebook_05(ctx: Context) -> list[Step]:
    """05_srm_loss_comparison: Table 4's relation losses and SWV only over ``sweep_seeds``."""
    pm = _ars_gradcam()
    grid = {key: (pm, cfg) for key, cfg in {**RELATION_SWEEP, "SWV only": SWV_ONLY}.items()}
    return segmenter_grid(grid, ctx.profile.sweep_seeds)


def notebook_06(ctx: Context) -> list[Step]:
    """06_final_benchmark: Table 2's ablation, the released recipe and the reference rows over ``seeds``."""
    pms = {"noars": pseudo_masks(stage1(ars=None), method="gradcam"), "ars": _ars_gradcam()}
    epochs = ctx.profile.seg_config(".", masks="train_gt").epochs
    grid = {key: (pms[source], cfg) for key, (source, cfg) in ABLATION.items()}
    grid["official"] = (pms["ars"], OFFICIAL_RECIPE)
    for key, (source, cfg, factor) in REFERENCE_ROWS.items():
        if source != "train_gt" or ctx.truth:
            grid[key] = (source if source == "train_gt" else pms[source], {**cfg, "epochs": factor * epochs})
    return segmenter_grid(grid, ctx.profile.seeds)


def notebook_07(ctx: Context) -> list[Step]:
    """07_noise_lab: every method on every corruption and on the CAM pseudo masks (needs ``train_gt``)."""
    if not ctx.truth:
        return []
    grid = {}
    for kind in ctx.profile.noise_kinds:
        for rate in ctx.profile.noise_rates:
            for method, cfg in NOISE_METHODS.items():
                grid[f"{kind}|{rate}|{method}"] = (noise(kind, rate), cfg)
    for method, cfg in NOISE_METHODS.items():
        grid[f"cam|{method}"] = (_ars_gradcam(), cfg)
    return segmenter_grid(grid, ctx.profile.noise_seeds)


NOTEBOOK_REQUESTS = {
    "01_cam_baselines": notebook_01,
    "02_ars_ablation": notebook_02,
    "03_pseudo_mask_quality": notebook_03,
    "04_swv_omega_sweep": notebook_04,
    "05_srm_loss_comparison": notebook_05,
    "06_final_benchmark": notebook_06,
    "07_noise_lab": notebook_07,
}


# ---------------------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """The steps of a plan in order (phase, then first request), each with the notebooks that need it."""

    profile: str
    steps: list[Step]
    notebooks: dict[Step, list[str]] = field(default_factory=dict)
    data: str | None = None
    dataset: str = "luad"

    def phase(self, number: int) -> list[Step]:
        return [s for s in self.steps if s.phase == number]

    def command(self, step: Step) -> str:
        """The ``arml run-step`` line of ``step``: complete once the earlier phases have run."""
        words = ["arml", "run-step", "--profile", self.profile]
        if self.data is not None:
            words += ["--data", self.data, "--dataset", self.dataset]
        return shlex.join([*words, step.id])


def _identity(step: Step, profile: Profile):
    """What decides a step's output: two steps with one identity make the same folder."""
    from arml.experiments import config_hash

    source = _identity(step.source, profile) if isinstance(step.source, Step) else step.source
    opts = step.options
    if step.kind == "stage1":
        return step.kind, config_hash(profile.cls_config(".", seed=step.seed, **opts).to_dict())
    if step.kind == "pm":
        return step.kind, source, config_hash(asdict(profile.pseudo_config(**opts)))
    if step.kind == "stage2":
        config = profile.seg_config(".", masks="<planned>", seed=step.seed, **opts)
        return step.kind, source, config_hash(config.to_dict())
    return step.id


def has_truth(data: str | Path | None) -> bool:
    """Whether the plan's data holds the training truth: the built-in synthetic data (``None``) does."""
    if data is None:
        return True
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {str(data)!r} is not a folder; see data/README.md")
    return (root / "train_gt").is_dir()


def build_plan(
    profile: str | Profile, only: str | None = None, data: str | Path | None = None, dataset: str = "luad"
) -> Plan:
    """Every step the notebooks selected by ``only`` (as ``arml reproduce --only``) ask for, once each.

    Raises:
        ValueError: an unknown profile or ``only`` entry (the message lists the valid ones).
        FileNotFoundError: ``data`` is not a folder.
    """
    from arml.options import DATASETS
    from arml.reproduce import select

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    ctx = Context(profile, has_truth(data))
    seen: dict[object, Step] = {}
    notebooks: dict[Step, list[str]] = {}
    data_step = Step("data")
    for stem in select(only):
        for request in NOTEBOOK_REQUESTS[stem](ctx):
            for step in [data_step, *reversed(request.parents), request]:
                step = seen.setdefault(_identity(step, profile), step)
                if stem not in notebooks.setdefault(step, []):
                    notebooks[step].append(stem)
    steps = sorted(seen.values(), key=lambda s: s.phase)  # stable: first request first within a phase
    root = None if data is None else str(Path(data).resolve())
    return Plan(profile.name, steps, notebooks, root, dataset)


def _count(n: int, phase: int) -> str:
    unit = "step" if phase == 0 else "run"
    return f"{n} {unit}{'' if n == 1 else 's'}"


def plan_lines(plan: Plan) -> list[str]:
    """The plan as text: a comment line per phase, then one ``arml run-step`` line per step."""
    lines = [f"# arml plan --profile {plan.profile}: {len(plan.steps)} steps; run each phase after the last"]
    for number, name in enumerate(PHASES):
        steps = plan.phase(number)
        if steps:
            lines.append(f"# phase {number}: {name} ({_count(len(steps), number)})")
            lines += [plan.command(s) for s in steps]
    return lines


def plan_json(plan: Plan) -> str:
    """The plan as JSON: per phase, every step with its command, inputs and the notebooks that need it."""
    phases = []
    for number, name in enumerate(PHASES):
        steps = [
            {
                "id": s.id,
                "kind": s.kind,
                "command": plan.command(s),
                "needs": [p.id for p in s.parents[:1]],
                "notebooks": plan.notebooks[s],
            }
            for s in plan.phase(number)
        ]
        if steps:
            phases.append({"phase": number, "name": name, "steps": steps})
    payload = {"profile": plan.profile, "data": plan.data, "dataset": plan.dataset, "phases": phases}
    return json.dumps(payload, indent=1)


# ------------------------------------------------------------------------------------------ execution
def open_experiment(profile: str, data=None, dataset: str = "luad", runs=None, progress: bool = False):
    """The :class:`~arml.experiments.Experiment` the notebooks would make (the data step's work)."""
    from arml.experiments import Experiment

    return Experiment(profile, data, dataset, runs=runs, progress=progress)


def stage1_folder(ex, step: Step) -> Path:
    """The run folder of a stage-1 step (:meth:`Experiment.classifier`'s, without training)."""
    from arml.experiments import config_hash

    return ex.runs / f"stage1-{config_hash(ex.cls_config(step.seed, **step.options).to_dict())}"


def _missing(step: Step, what: Path | str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found: run step {step.id!r} (phase {step.phase}) first")


def masks_name(ex, step: Step) -> str:
    """The ``train_PM/`` folder name a finished ``pm`` or ``noise`` step wrote, read from the cache only.

    The name is :meth:`Experiment.pseudo_masks`'s (keyed by the stage-1 run name and weights digest) or
    :func:`arml.noise.corrupt_dataset`'s default; the folder must be complete (``manifest.json``).
    """
    from arml.noise import noise_folder_name
    from arml.pseudo_masks import read_manifest
    from arml.stage1 import FINISHED

    if step.kind == "pm":
        run = stage1_folder(ex, step.source)
        if not (run / FINISHED).is_file():
            raise _missing(step.source, run / FINISHED)
        name = ex.pseudo_mask_name(run, **step.options)
    else:
        opts = step.options
        name = noise_folder_name(opts["kind"], opts["rate"], step.seed)
    folder = ex.data_root / "train_PM" / name
    manifest = read_manifest(folder) if (folder / "manifest.json").is_file() else None
    if not (manifest and manifest.get("complete")):
        raise _missing(step, folder)
    return name


def stage2_run(ex, step: Step):
    """``(SegConfig, run folder)`` of a stage-2 step, as :meth:`Experiment.segmenter_grid` makes them."""
    from arml.experiments import config_hash

    masks = masks_name(ex, step.source) if isinstance(step.source, Step) else step.source
    config = ex.seg_config(masks, step.seed, **step.options)
    return config, ex.runs / f"stage2-{config_hash(config.to_dict())}"


def is_cached(ex, step: Step) -> bool:
    """Whether the step's output is there and finished (unresolvable inputs count as not cached)."""
    from arml.stage1 import FINISHED as STAGE1_DONE
    from arml.stage2 import FINISHED as STAGE2_DONE

    try:
        if step.kind == "data":
            return True
        if step.kind == "stage1":
            return (stage1_folder(ex, step) / STAGE1_DONE).is_file()
        if step.kind in ("pm", "noise"):
            return bool(masks_name(ex, step))
        return (stage2_run(ex, step)[1] / STAGE2_DONE).is_file()
    except FileNotFoundError:
        return False


@functools.cache
def default_threads() -> int:
    """Torch's intra-op thread count at this process's start (a notebook kernel's count), read once."""
    import torch

    return torch.get_num_threads()


def notebook_threads(ex, step: Step) -> int | None:
    """The torch threads the notebooks give ``step`` on the CPU; None on CUDA (GPU floats do not depend on them).

    A notebook runs data, stage-1, pseudo-mask and noise steps in its kernel with torch's default count, and
    trains a stage-2 grid in ``ex.workers`` processes of ``cpu_count // ex.workers`` threads each (in the
    kernel, with the default, when ``ex.workers`` is 1; :func:`arml.experiments.train_runs`). Float sums are
    split by thread, so a chaotic stage changes with the count: a plan computes the notebooks' numbers bit for
    bit only with the same counts, whatever ``--workers`` it runs with.
    """
    import torch

    if torch.cuda.is_available():
        return None
    if step.kind == "stage2" and ex.workers > 1:
        return max(1, (os.cpu_count() or 1) // ex.workers)
    return default_threads()


def run_step(ex, step: Step) -> str:
    """Run (or reuse) one step through the calls the notebooks make, with their thread count
    (:func:`notebook_threads`); returns what it made."""
    import torch

    threads = notebook_threads(ex, step)
    if threads is None:
        return _run_step(ex, step)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_step(ex, step)
    finally:
        torch.set_num_threads(saved)


def _run_step(ex, step: Step) -> str:
    if step.kind == "data":
        return str(ex.data_root)
    if step.kind == "stage1":
        return str(ex.classifier(step.seed, **step.options))
    if step.kind == "pm":
        run = stage1_folder(ex, step.source)
        if not run.is_dir():
            raise _missing(step.source, run)
        return ex.pseudo_masks(run, **step.options)["folder"]
    if step.kind == "noise":
        from arml.noise import corrupt_dataset

        opts = step.options
        made = corrupt_dataset(
            ex.data_root, opts["kind"], opts["rate"], step.seed, dataset=ex.dataset, progress=ex.progress
        )
        return made["folder"]
    from arml.stage2 import train_segmenter

    config, run = stage2_run(ex, step)
    train_segmenter(config, run)
    return str(run)


class StepFailed(RuntimeError):
    """A step of :func:`run_plan` raised; the message names it and how to rerun it alone."""


_EXPERIMENTS: dict[tuple, object] = {}


def _init_worker(devices, threads: int) -> None:
    """A worker's set-up: its own GPU (from the ``devices`` queue) and ``threads`` CPU threads; on the CPU
    (no ``devices``) :func:`run_step` sets each step's count itself."""
    import torch

    default_threads()  # read before anything changes it
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
        torch.set_num_threads(threads)


def _worker_step(step_id: str, where: tuple) -> str:
    """One step in a worker process (top level: importable by ``spawn``); one Experiment per worker."""
    if where not in _EXPERIMENTS:
        _EXPERIMENTS[where] = open_experiment(*where)
    return run_step(_EXPERIMENTS[where], parse_step(step_id))


def run_plan(plan: Plan, workers: int = 1, runs=None, progress: bool = True, log=print) -> dict[str, int]:
    """Execute ``plan`` phase by phase with up to ``workers`` processes, skipping finished steps.

    On the CPU every step runs with the notebooks' thread count (:func:`notebook_threads`), so a plan-driven
    run computes the notebooks' numbers bit for bit; a phase runs ``min(workers, cpu_count // threads)``
    steps at a time (in this process when that is 1). On the 2-core reference machine with the ``cpu``
    profile: stage 1, pseudo masks and noise one at a time with 2 threads, stage 2 two at a time with one.
    With CUDA each step runs in a spawned process with its own GPU when there are at least ``workers``
    devices (``cpu_count // workers`` threads each); one worker runs in this process.

    Returns:
        ``{"ran": n, "cached": n}`` over all steps.

    Raises:
        ValueError: ``workers`` < 1.
        StepFailed: a step failed (the steps running beside it finish first; later phases do not start).
    """
    import concurrent.futures as cf
    import multiprocessing

    import torch
    from tqdm.auto import tqdm

    from arml.runtime import default_dir

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    default_threads()  # torch's default, read before any step changes the count
    where = (plan.profile, plan.data, plan.dataset, str(runs or default_dir("runs")), False)
    ex = open_experiment(*where[:4], progress=progress)  # the data step, here: before workers read it
    cuda = torch.cuda.is_available()
    totals = {"ran": 0, "cached": 0}
    for number, name in enumerate(PHASES):
        steps = plan.phase(number)
        todo = [s for s in steps if not _guarded(plan, s, lambda s=s: is_cached(ex, s))]
        totals["ran"] += len(todo)
        totals["cached"] += len(steps) - len(todo)
        at_once = min(workers, len(todo))
        threads = None if cuda or not todo else notebook_threads(ex, todo[0])
        if threads is not None:
            at_once = max(1, min(at_once, (os.cpu_count() or 1) // threads))
        if number == 0:
            log(f"phase 0: data in {ex.data_root}")
        elif steps:
            how = (
                f"; {at_once} at a time, {threads} thread{'s' if threads != 1 else ''} each"
                if threads
                else ""
            )
            log(f"phase {number}: {name}: {len(todo)} to run, {len(steps) - len(todo)} cached{how}")
        if not todo:
            continue
        bar = tqdm(total=len(todo), desc=f"phase {number}: {name}", disable=not progress)
        try:
            if at_once == 1:
                for step in todo:
                    _guarded(plan, step, lambda s=step: run_step(ex, s))
                    bar.update()
                continue
            context = multiprocessing.get_context("spawn")
            gpus = cuda and torch.cuda.device_count() >= workers
            devices = context.Queue() if gpus else None
            for i in range(workers if gpus else 0):
                devices.put(i)
            with cf.ProcessPoolExecutor(
                at_once,
                mp_context=context,
                initializer=_init_worker,
                initargs=(devices, max(1, (os.cpu_count() or 1) // workers)),
            ) as pool:
                futures = {pool.submit(_worker_step, s.id, where): s for s in todo}
                for future in cf.as_completed(futures):
                    if future.exception() is not None:
                        for other in futures:
                            other.cancel()
                    _guarded(plan, futures[future], future.result)
                    bar.update()
        finally:
            bar.close()
    return totals


def _guarded(plan: Plan, step: Step, call):
    """``call()``, any error of it raised again as :class:`StepFailed` naming ``step``."""
    try:
        return call()
    except Exception as err:
        raise StepFailed(
            f"step {step.id} (phase {step.phase}: {PHASES[step.phase]}) failed: {type(err).__name__}: {err}\n"
            f"rerun it alone: {plan.command(step)}"
        ) from err
