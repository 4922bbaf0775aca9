"""The ``arml`` command line: one sub-command per stage (``arml --help``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arml.datasets import DATASETS


def _cmd_data_check(args: argparse.Namespace) -> int:
    from arml.datasets import check_layout

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
    )
    print(f"synthetic {args.dataset} dataset ({args.profile} profile, seed {args.seed}) in {out}")
    return 0


def _cmd_train_cls(args: argparse.Namespace) -> int:
    from arml.profiles import get_profile
    from arml.stage1 import train_classifier

    overrides = {
        "dataset": args.dataset,
        "seed": args.seed,
        "progress": not args.quiet,
        "device": args.device,
    }
    if args.ars is not None:
        overrides["ars"] = None if args.ars == "none" else args.ars
    for name in ("recipe", "backbone", "epochs", "batch_size", "lr"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = get_profile(args.profile).cls_config(args.data, **overrides)
    train_classifier(config, args.out, resume=not args.restart)
    print(f"stage-1 classifier ({config.backbone}, ARS {config.ars}, {config.recipe} recipe) in {args.out}")
    return 0


def _cmd_pseudo_masks(args: argparse.Namespace) -> int:
    from arml.datasets import CLASS_NAMES
    from arml.metrics import summarize
    from arml.profiles import get_profile
    from arml.stage1 import generate_pseudo_masks, load_config

    overrides = {"method": args.cam}
    if args.use_ars is not None:
        overrides["use_ars"] = args.use_ars == "yes"
    config = get_profile(args.profile).pseudo_config(**overrides)
    result = generate_pseudo_masks(
        args.checkpoint,
        args.name,
        data_root=args.data,
        config=config,
        device=args.device,
        progress=not args.quiet,
    )
    print(
        f"{result['written']} pseudo masks written, {result['skipped']} already there, in {result['folder']} "
        f"({result['images_per_s']:.1f} images/s)"
    )
    if result["metrics"] is not None:
        names = CLASS_NAMES[load_config(args.checkpoint).dataset]
        print(f"pseudo masks vs train_gt (synthetic): {summarize(result['metrics'], names)}")
    return 0


def _cmd_train_seg(args: argparse.Namespace) -> int:
    import math

    from arml.datasets import CLASS_NAMES
    from arml.profiles import get_profile
    from arml.stage2 import format_metrics, train_segmenter

    def optional(text: str):
        return None if text.lower() in ("none", "n/a") else text

    overrides = {
        "dataset": args.dataset,
        "seed": args.seed,
        "progress": not args.quiet,
        "device": args.device,
    }
    if args.omega is not None:
        omega = optional(args.omega)
        overrides["omega"] = None if omega is None else (math.inf if omega == "inf" else float(omega))
    if args.relation is not None:
        overrides["relation"] = optional(args.relation)
    for name in ("lam", "recipe", "encoder", "arch", "epochs", "batch_size", "lr", "normalize"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = get_profile(args.profile).seg_config(args.data, masks=args.masks, **overrides)
    metrics = train_segmenter(config, args.out, resume=not args.restart)
    print(format_metrics(metrics, CLASS_NAMES[config.dataset]))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from arml.stage2 import evaluate, format_metrics

    metrics = evaluate(args.checkpoint, data_root=args.data, split=args.split, device=args.device)
    print(format_metrics(metrics))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from arml.reproduce import run_notebooks, summary_table

    out = args.out.resolve() if args.out else None
    try:
        runs = run_notebooks(args.profile, args.data, args.dataset, out, args.only, progress=not args.quiet)
    except RuntimeError as err:
        print(f"arml reproduce: {err}", file=sys.stderr)
        return 1
    from arml.experiments import REPO_ROOT

    print(summary_table(runs, (out or REPO_ROOT) / "results"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arml",
        description="ARML (MICCAI 2024): weakly supervised tissue segmentation, stage by stage.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="inspect a dataset folder")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = data_sub.add_parser("check", help="check a dataset against the published layout (read-only)")
    check.add_argument("root", type=Path, help="dataset root (holds train/, val/, test/)")
    check.add_argument("--dataset", choices=DATASETS, default="luad", help="name grammar and classes")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=_cmd_data_check)

    synth = sub.add_parser("synth", help="write the built-in synthetic H&E dataset (LUAD-HistoSeg layout)")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--profile", choices=("quick", "cpu", "paper"), default="cpu", help="dataset size")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same bytes)")
    synth.add_argument("--dataset", choices=DATASETS, default="luad", help="file naming and class order")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_cmd_synth)

    cls = sub.add_parser("train-cls", help="stage 1: train the classifier (with ARS) on image-level labels")
    cls.add_argument("--data", type=Path, required=True, help="dataset root")
    cls.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, history)")
    cls.add_argument("--profile", choices=("quick", "cpu", "paper"), default="cpu")
    cls.add_argument("--dataset", choices=DATASETS, default="luad")
    cls.add_argument(
        "--ars",
        choices=("none", "cca", "reactivation", "both"),
        default=None,
        help="ARS parts (default: both)",
    )
    cls.add_argument("--recipe", choices=("paper", "official"), default=None, help="default: paper")
    cls.add_argument("--backbone", default=None, help="timm name or resnet38d (default: the profile's)")
    cls.add_argument("--epochs", type=int, default=None)
    cls.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    cls.add_argument("--lr", type=float, default=None)
    cls.add_argument("--seed", type=int, default=0)
    cls.add_argument("--device", default="auto")
    cls.add_argument("--restart", action="store_true", help="ignore an interrupted run in --out")
    cls.add_argument("--quiet", action="store_true")
    cls.set_defaults(func=_cmd_train_cls)

    pm = sub.add_parser("pseudo-masks", help="stage 1: CAMs -> pseudo masks in ROOT/train_PM/NAME/")
    pm.add_argument("--data", type=Path, default=None, help="dataset root (default: the one trained on)")
    pm.add_argument("--checkpoint", type=Path, required=True, help="stage-1 run folder")
    pm.add_argument("--name", required=True, help="output folder name under train_PM/")
    pm.add_argument("--cam", default="gradcam", help="cam, gradcam (default), gradcam++, layercam, ...")
    pm.add_argument(
        "--use-ars",
        choices=("yes", "no"),
        default=None,
        help="apply ARS when making CAMs (default: yes, except the official recipe)",
    )
    pm.add_argument("--profile", choices=("quick", "cpu", "paper"), default="cpu")
    pm.add_argument("--device", default="auto")
    pm.add_argument("--quiet", action="store_true")
    pm.set_defaults(func=_cmd_pseudo_masks)

    seg = sub.add_parser("train-seg", help="stage 2: three peers with SWV + SRM on pseudo masks")
    seg.add_argument("--data", type=Path, required=True, help="dataset root")
    seg.add_argument("--masks", required=True, help="pseudo-mask folder name under train_PM/ (or train_gt)")
    seg.add_argument("--out", type=Path, required=True, help="run folder")
    seg.add_argument("--profile", choices=("quick", "cpu", "paper"), default="cpu")
    seg.add_argument("--dataset", choices=DATASETS, default="luad")
    seg.add_argument(
        "--omega", default=None, help="SWV weight ω >= 1, 'inf', or 'none' for plain CE (default 2)"
    )
    seg.add_argument("--relation", default=None, help="st (default), pt, kl, crl or none")
    seg.add_argument("--lam", type=float, default=None, help="λ of Eq. (9) (default 0.2)")
    seg.add_argument("--recipe", choices=("paper", "official"), default=None, help="default: paper")
    seg.add_argument("--normalize", choices=("weights", "pixels"), default=None, help="SWV normalisation")
    seg.add_argument("--arch", choices=("pspnet", "deeplabv3plus"), default=None)
    seg.add_argument("--encoder", default=None, help="timm encoder name (default: the profile's)")
    seg.add_argument("--epochs", type=int, default=None)
    seg.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    seg.add_argument("--lr", type=float, default=None)
    seg.add_argument("--seed", type=int, default=0)
    seg.add_argument("--device", default="auto")
    seg.add_argument("--restart", action="store_true", help="start over instead of resuming")
    seg.add_argument("--quiet", action="store_true")
    seg.set_defaults(func=_cmd_train_seg)

    ev = sub.add_parser("evaluate", help="score a stage-2 run's best checkpoint on a split")
    ev.add_argument("--checkpoint", type=Path, required=True, help="stage-2 run folder")
    ev.add_argument("--data", type=Path, default=None, help="dataset root (default: the one trained on)")
    ev.add_argument("--split", choices=("val", "test"), default="test")
    ev.add_argument("--device", default="auto")
    ev.set_defaults(func=_cmd_evaluate)

    rep = sub.add_parser("reproduce", help="run notebooks 01-06 headless with papermill (the main job)")
    rep.add_argument("--profile", choices=("quick", "cpu", "paper"), default="cpu")
    rep.add_argument("--data", type=Path, default=None, help="dataset root (default: built-in synthetic)")
    rep.add_argument("--dataset", choices=DATASETS, default="luad")
    rep.add_argument("--out", type=Path, default=None, help="output folder (default: the repository)")
    rep.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,04")
    rep.add_argument("--quiet", action="store_true")
    rep.set_defaults(func=_cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"arml {args.command}: error: {err}", file=sys.stderr)
        return 2
