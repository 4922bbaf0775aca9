"""The ``arml`` command line: one sub-command per stage (``arml --help``).

The options of ``train-cls``, ``pseudo-masks`` and ``train-seg`` are generated from the fields of
:class:`~arml.stage1.ClsConfig`, :class:`~arml.pseudo_masks.PseudoMaskConfig` and
:class:`~arml.stage2.SegConfig` (:func:`add_config_options`): every field is reachable, with the type,
choices and one-line help declared beside it (:func:`arml.options.option`). ``--profile`` fills in the
profile's sizes first; an option given on the command line wins over it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

from arml.options import DATASETS, EVAL_SPLITS
from arml.profiles import PROFILE_NAMES

_NONE_WORDS = ("none", "null")


def _scalar_parser(kind: type, name: str, choices: tuple | None) -> Callable[[str], object]:
    """Text → value of ``kind`` (``"none"`` → None where the field allows it), checked against ``choices``."""
    optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
    base = next((k for k in typing.get_args(kind) if k is not type(None)), str) if optional else kind

    named = [c for c in choices or () if isinstance(c, str)]

    def parse(text: str):
        if text in named:  # a choice spelled "none" (the BCSS background rule) is that choice, not None
            value = text
        elif (optional or (choices and None in choices)) and text.strip().lower() in _NONE_WORDS:
            value = None
        else:
            try:
                value = base(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {base.__name__}, got {text!r}") from None
        if choices is not None and value not in choices:
            shown = ", ".join("none" if c is None else str(c) for c in choices)
            raise argparse.ArgumentTypeError(f"{text!r} is not one of: {shown}")
        return value

    parse.__name__ = name
    return parse


def add_config_options(parser: argparse.ArgumentParser, config_cls: type, title: str) -> list[str]:
    """Add one ``--field-name`` option per field of ``config_cls`` (except ``cli=False`` fields).

    Absent options stay out of the parsed namespace (``argparse.SUPPRESS``), so :func:`config_overrides`
    passes on only what the user typed. Returns the field names added.
    """
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group(title)
    added = []
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        kind, choices = hints[f.name], meta.get("choices")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = meta.get("help", "")
        if choices:
            help_text += f" [{', '.join(str(c) for c in choices if c is not None)}]"
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        help_text += " (required)" if required else f" (default: {default})"
        flags = [f"--{f.name.replace('_', '-')}", *meta.get("aliases", ())]
        kwargs: dict = {"dest": f.name, "help": help_text, "default": argparse.SUPPRESS, "required": required}
        if kind in (bool, bool | None):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:
            kwargs.update(nargs="+", type=_scalar_parser(typing.get_args(kind)[0], f.name, None))
        else:
            kwargs["type"] = _scalar_parser(kind, f.name, choices)
            kwargs["metavar"] = f.name.upper()
        group.add_argument(*flags, **kwargs)
        added.append(f.name)
    return added


def config_overrides(args: argparse.Namespace, config_cls: type) -> dict:
    """The config fields given on the command line (absent ones are not in ``args``)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}


# ------------------------------------------------------------------------------------------- commands
def _cmd_data_check(args: argparse.Namespace) -> int:
    from arml.data_check import check_layout

    report = check_layout(args.root, dataset=args.dataset, progress=not args.quiet)
    print(report.format())
    return 0 if report.ok else 1


def _cmd_synth(args: argparse.Namespace) -> int:
    from arml.synth import generate_dataset

    out = generate_dataset(
        args.out,
        profile=args.profile,
        seed=args.seed,
        dataset=args.dataset,
        progress=not args.quiet,
        overwrite=args.overwrite,
        drop_pseudo_masks=args.drop_pseudo_masks,
        log=print,
    )
    print(f"synthetic {args.dataset} dataset ({args.profile} profile, seed {args.seed}) in {out}")
    return 0


def _main_process_print():
    """``print`` in a single process and on torchrun's rank 0; a no-op on the other ranks (one report, not N)."""
    from arml.distributed import detect

    return print if detect().is_main else (lambda *args, **kwargs: None)


def _cmd_train_cls(args: argparse.Namespace) -> int:
    from arml.profiles import get_profile
    from arml.stage1 import ClsConfig, train_classifier

    overrides = {**config_overrides(args, ClsConfig), "progress": not args.quiet}
    config = get_profile(args.profile).cls_config(args.data, **overrides)
    say = _main_process_print()
    say(f"data: {config.data_root} ({config.dataset})", flush=True)
    train_classifier(config, args.out, resume=not args.restart)
    say(f"stage-1 classifier ({config.backbone}, ARS {config.ars}, {config.recipe} recipe) in {args.out}")
    return 0


def _cmd_pseudo_masks(args: argparse.Namespace) -> int:
    from arml.datasets import CLASS_NAMES
    from arml.metrics import summarize
    from arml.profiles import get_profile
    from arml.pseudo_masks import PseudoMaskConfig, generate_pseudo_masks
    from arml.stage1 import load_config

    config = get_profile(args.profile).pseudo_config(**config_overrides(args, PseudoMaskConfig))
    result = generate_pseudo_masks(
        args.checkpoint,
        args.name,
        data_root=args.data,
        config=config,
        device=args.device,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(f"data: {result['data_root']}")
    print(
        f"{result['written']} pseudo masks written, {result['skipped']} already there, in {result['folder']} "
        f"({config.method}; {result['images_per_s']:.1f} images/s)"
    )
    if result["metrics"] is not None:
        names = CLASS_NAMES[load_config(args.checkpoint).dataset]
        print(f"pseudo masks vs train_gt (synthetic): {summarize(result['metrics'], names)}")
    return 0


def _cmd_train_seg(args: argparse.Namespace) -> int:
    from arml.datasets import CLASS_NAMES
    from arml.evaluation import format_metrics
    from arml.profiles import get_profile
    from arml.stage2 import SegConfig, train_segmenter

    overrides = {**config_overrides(args, SegConfig), "progress": not args.quiet}
    config = get_profile(args.profile).seg_config(args.data, **overrides)
    say = _main_process_print()
    say(f"data: {config.data_root} ({config.dataset}); training masks: {config.masks}", flush=True)
    metrics = train_segmenter(config, args.out, resume=not args.restart)
    say(format_metrics(metrics, CLASS_NAMES[config.dataset]))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from arml.evaluation import evaluate, format_metrics

    metrics = evaluate(
        args.checkpoint, data_root=args.data, split=args.split, dataset=args.dataset, device=args.device
    )
    note = ""
    if metrics.get("data_matches_run") is False:
        note = f" (not the data the run was trained on: {metrics['run_data_root']})"
    print(f"data: {metrics['data_root']}{note}")
    print(format_metrics(metrics))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from arml.reproduce import run_notebooks, summary_table
    from arml.runtime import REPO_ROOT

    out = args.out.resolve() if args.out else None
    profile, source = args.profile, "--profile"
    if profile is None:
        profile, source = (
            (os.environ["ARML_PROFILE"], "$ARML_PROFILE")
            if os.environ.get("ARML_PROFILE")
            else ("cpu", "default")
        )
    print(f"arml reproduce: profile {profile} ({source})", flush=True)
    try:
        runs = run_notebooks(profile, args.data, args.dataset, out, args.only, progress=not args.quiet)
    except RuntimeError as err:
        print(f"arml reproduce: {err}", file=sys.stderr)
        return 1
    print(summary_table(runs, (out or REPO_ROOT) / "results"))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from arml.datasets import CLASS_LONG_NAMES
    from arml.inference import predict_image

    result = predict_image(
        args.checkpoint,
        args.image,
        out=args.out,
        model=args.model,
        window=args.window,
        stride=args.stride,
        device=args.device,
    )
    print(f"image: {Path(result['image']).resolve()} ({result['width']}×{result['height']} pixels)")
    print(
        f"run: {args.checkpoint.resolve()}; model {result['model']}; window {result['window']} "
        f"({result['window_source']}), stride {result['stride']}, {result['windows']} windows on "
        f"{result['device']} in {result['seconds']:.1f} s"
    )
    print(f"mask: {result['mask']}")
    print(f"overlay: {result['overlay']}")
    long_names = CLASS_LONG_NAMES[result["dataset"]]
    print("class shares (the background label 4 is never predicted):")
    for (name, share), long_name in zip(result["shares"].items(), long_names, strict=True):
        print(f"  {name:<4} {100 * share:6.2f}%  {long_name}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from arml.plan import build_plan, plan_json, plan_lines

    plan = build_plan(args.profile, args.only, args.data, args.dataset)
    print(plan_json(plan) if args.format == "json" else "\n".join(plan_lines(plan)))
    return 0


def _cmd_run_plan(args: argparse.Namespace) -> int:
    from arml.plan import StepFailed, build_plan, run_plan

    plan = build_plan(args.profile, args.only, args.data, args.dataset)
    try:
        totals = run_plan(plan, args.workers, progress=not args.quiet)
    except StepFailed as err:
        print(f"arml run-plan: {err}", file=sys.stderr)
        return 1
    print(f"plan done: {totals['ran']} steps run, {totals['cached']} cached; the notebooks read the cache")
    return 0


def _cmd_run_step(args: argparse.Namespace) -> int:
    from arml.plan import open_experiment, parse_step, run_step

    step = parse_step(args.step)
    ex = open_experiment(args.profile, args.data, args.dataset, progress=not args.quiet)
    print(f"{step.id}: {run_step(ex, step)}")
    return 0


# --------------------------------------------------------------------------------------------- parser
def _data_commands(sub) -> None:
    data = sub.add_parser("data", help="inspect a dataset folder")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = data_sub.add_parser("check", help="check a dataset against the published layout (read-only)")
    check.add_argument("root", type=Path, help="dataset root (holds train/, val/, test/)")
    check.add_argument("--dataset", choices=DATASETS, default="luad", help="name grammar and classes")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=_cmd_data_check)

    synth = sub.add_parser("synth", help="write the built-in synthetic H&E dataset (LUAD-HistoSeg layout)")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--profile", choices=PROFILE_NAMES, default="cpu", help="dataset size")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same bytes)")
    synth.add_argument("--dataset", choices=DATASETS, default="luad", help="file naming and class order")
    synth.add_argument(
        "--overwrite", action="store_true", help="replace a dataset that arml made in --out (keeps train_PM/)"
    )
    synth.add_argument(
        "--drop-pseudo-masks",
        action="store_true",
        help="with --overwrite: also delete train_PM/ (pseudo masks)",
    )
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_cmd_synth)


STAGE_COMMANDS = ("train-cls", "pseudo-masks", "train-seg")


def _stage_commands(sub, config_options: bool = True) -> None:
    """The stage commands; ``config_options=False`` leaves out the options generated from the configs,
    whose import (torch, timm, smp) costs seconds: ``arml --help`` and ``arml data check`` do not need them."""

    def options_of(parser, module: str, name: str, title: str) -> None:
        if config_options:
            import importlib

            add_config_options(parser, getattr(importlib.import_module(module), name), title)

    def common(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--profile", choices=PROFILE_NAMES, default="cpu", help=f"sizes of the {what}")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    cls = sub.add_parser("train-cls", help="stage 1: train the classifier (with ARS) on image-level labels")
    cls.add_argument("--data", type=Path, required=True, help="dataset root")
    cls.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, history)")
    cls.add_argument("--restart", action="store_true", help="start over instead of resuming --out")
    common(cls, "classifier")
    options_of(
        cls, "arml.stage1", "ClsConfig", "stage-1 options (ClsConfig; default: the profile's, else below)"
    )
    cls.set_defaults(func=_cmd_train_cls)

    pm = sub.add_parser("pseudo-masks", help="CAMs of a stage-1 run -> pseudo masks in ROOT/train_PM/NAME/")
    pm.add_argument("--checkpoint", type=Path, required=True, help="stage-1 run folder")
    pm.add_argument("--name", required=True, help="output folder name under train_PM/")
    pm.add_argument("--data", type=Path, default=None, help="dataset root (default: the one trained on)")
    pm.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    pm.add_argument(
        "--overwrite", action="store_true", help="regenerate a NAME folder made with another config"
    )
    common(pm, "CAM batches")
    options_of(pm, "arml.pseudo_masks", "PseudoMaskConfig", "pseudo-mask options (PseudoMaskConfig)")
    pm.set_defaults(func=_cmd_pseudo_masks)

    seg = sub.add_parser("train-seg", help="stage 2: three peers with SWV + SRM on pseudo masks")
    seg.add_argument("--data", type=Path, required=True, help="dataset root")
    seg.add_argument("--out", type=Path, required=True, help="run folder")
    seg.add_argument("--restart", action="store_true", help="start over instead of resuming --out")
    common(seg, "segmenters")
    options_of(
        seg, "arml.stage2", "SegConfig", "stage-2 options (SegConfig; default: the profile's, else below)"
    )
    seg.set_defaults(func=_cmd_train_seg)

    ev = sub.add_parser("evaluate", help="score a stage-2 run's best checkpoint on a split")
    ev.add_argument("--checkpoint", type=Path, required=True, help="stage-2 run folder")
    ev.add_argument("--data", type=Path, default=None, help="dataset root (default: the one trained on)")
    ev.add_argument("--split", choices=EVAL_SPLITS, default="test")
    ev.add_argument(
        "--dataset", choices=DATASETS, default=None, help="name grammar and classes (default: the run's)"
    )
    ev.add_argument("--device", default="auto")
    ev.set_defaults(func=_cmd_evaluate)


def _predict_command(sub) -> None:
    from arml.options import ENSEMBLE, PEER_NAMES

    pr = sub.add_parser(
        "predict",
        help="segment a new image (PNG/JPEG/TIFF, any size) with a stage-2 run: palette mask + overlay",
        description="Slide windows at the training scale over the image, blend the softmax probabilities, "
        "write the argmax as a palette PNG (classes 0..3; the background label 4 is never predicted) and "
        "<out stem>_overlay.png.",
    )
    pr.add_argument("--checkpoint", type=Path, required=True, help="stage-2 run folder (best.pt)")
    pr.add_argument("--image", type=Path, required=True, help="a PNG, JPEG or TIFF image of any size")
    pr.add_argument(
        "--out", type=Path, default=None, help="mask file, .png (default: ./<image stem>_mask.png)"
    )
    pr.add_argument(
        "--model",
        choices=(*PEER_NAMES, ENSEMBLE),
        default="F_a",
        help="F_a (the paper's model), a peer, or the ensemble",
    )
    pr.add_argument(
        "--window",
        type=int,
        default=None,
        help="window side, a multiple of 8 for PSPNet (default: the run's training image size, else 224)",
    )
    pr.add_argument("--stride", type=int, default=None, help="step between windows (default: window // 2)")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    pr.set_defaults(func=_cmd_predict)


def _plan_commands(sub) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--profile", choices=PROFILE_NAMES, default=None, help="sizes (default: $ARML_PROFILE, else cpu)"
        )
        p.add_argument("--data", type=Path, default=None, help="dataset root (default: built-in synthetic)")
        p.add_argument("--dataset", choices=DATASETS, default="luad")

    plan = sub.add_parser(
        "plan", help="print every stage run the notebooks need, one `arml run-step` line each, by phase"
    )
    common(plan)
    plan.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 04,06")
    plan.add_argument("--format", choices=("lines", "json"), default="lines")
    plan.set_defaults(func=_cmd_plan)

    run = sub.add_parser("run-plan", help="execute the plan with N worker processes, skipping cached runs")
    common(run)
    run.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 04,06")
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="steps at once, at most (on a CPU each keeps the notebooks' thread count)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run_plan)

    step = sub.add_parser("run-step", help="run one step of a plan (its inputs resolved from the cache)")
    common(step)
    step.add_argument("step", help="a step name from `arml plan`, e.g. stage1:ars=both:seed=0")
    step.add_argument("--quiet", action="store_true", help="no progress bars")
    step.set_defaults(func=_cmd_run_step)


def build_parser(config_options: bool = True) -> argparse.ArgumentParser:
    """The whole ``arml`` parser; ``config_options=False`` skips the generated stage options (fast)."""
    parser = argparse.ArgumentParser(
        prog="arml",
        description="ARML (MICCAI 2024): weakly supervised tissue segmentation, stage by stage.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _data_commands(sub)
    _stage_commands(sub, config_options)
    _predict_command(sub)
    _plan_commands(sub)
    rep = sub.add_parser(
        "reproduce", help="run the numbered notebooks headless with papermill (the main job)"
    )
    rep.add_argument(
        "--profile", choices=PROFILE_NAMES, default=None, help="sizes (default: $ARML_PROFILE, else cpu)"
    )
    rep.add_argument("--data", type=Path, default=None, help="dataset root (default: built-in synthetic)")
    rep.add_argument("--dataset", choices=DATASETS, default="luad")
    rep.add_argument("--out", type=Path, default=None, help="output folder (default: the repository)")
    rep.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,04")
    rep.add_argument("--quiet", action="store_true")
    rep.set_defaults(func=_cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(config_options=any(a in STAGE_COMMANDS for a in argv[:1]))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message (or the help)
        return int(exit_.code or 0)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # bad input: the message says which
        print(f"arml {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine said no: a full disk, a read-only or forbidden folder
        print(f"arml {args.command}: error: {err}", file=sys.stderr)
        return 1
