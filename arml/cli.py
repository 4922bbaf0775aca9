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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"arml {args.command}: error: {err}", file=sys.stderr)
        return 2
