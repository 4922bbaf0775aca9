"""How far stage 2 is from convergence: test mIoU of F_a per (batch size, epochs), over several seeds. Not a test.

Trains a single network with plain CE (the "+ARS" row of notebook 06) on one set of training masks for each
``BATCHxEPOCHS`` setting and seed, and prints mean ± std and the per-seed scores, with the compute of each
setting relative to the first (optimiser steps × batch size). This is the measurement behind the ``cpu``
profile's stage-2 length (docs/architecture.md, "Convergence"); rerun it after changing the synthetic world,
the segmenter or the optimiser. Runs are cached in ``--out``, so a second call only prints.

    python benchmarks/convergence_grid.py --data data/synthetic/cpu --masks pm-gradcam-<digest> \\
        --settings 16x8 8x12 8x24 --seeds 0 1 2 3 4 5 --workers 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

from arml.experiments import config_hash, train_runs
from arml.profiles import PROFILE_NAMES, get_profile


def parse_setting(text: str) -> tuple[int, int]:
    """``"8x12"`` → ``(8, 12)`` (batch size, epochs); both must be positive integers."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected BATCHxEPOCHS such as 8x12, got {text!r}")
    return int(parts[0]), int(parts[1])


def summarize(scores: list[float]) -> str:
    """``"0.734 ± 0.011"`` (sample std; a single score is marked as such)."""
    if len(scores) == 1:
        return f"{scores[0]:.3f} (single run)"
    return f"{statistics.mean(scores):.3f} ± {statistics.stdev(scores):.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/synthetic/cpu", help="dataset root")
    parser.add_argument("--masks", required=True, help="training masks (a train_PM/ folder name or train_gt)")
    parser.add_argument("--profile", default="cpu", choices=PROFILE_NAMES, help="every other stage-2 setting")
    parser.add_argument("--settings", nargs="+", type=parse_setting, default=[(16, 8), (8, 12)])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once")
    parser.add_argument("--out", default="runs/convergence_grid", help="cache of the runs")
    args = parser.parse_args(argv)

    profile = get_profile(args.profile)
    jobs, cells = [], {}
    for batch, epochs in args.settings:
        for seed in args.seeds:
            config = profile.seg_config(
                args.data, masks=args.masks, peers=1, omega=None, relation=None, batch_size=batch,
                epochs=epochs, seed=seed, progress=False, probe_images=0,
            )  # fmt: skip
            run = Path(args.out) / f"b{batch}-e{epochs}-{config_hash(asdict(config))}"
            jobs.append((config, run))
            cells.setdefault((batch, epochs), []).append(run)
    train_runs(jobs, workers=args.workers, progress=True)

    base_batch, base_epochs = args.settings[0]
    print(f"\nCE on {args.masks}, profile {args.profile}, seeds {args.seeds}: test mIoU of F_a")
    print(f"{'batch':>5} {'epochs':>6} {'compute':>8}  {'mean ± std':<22} per seed")
    for (batch, epochs), runs in cells.items():
        scores = [json.loads((r / "metrics.json").read_text())["F_a"]["miou"] for r in runs]
        compute = epochs / base_epochs  # samples seen: epochs × training set, whatever the batch
        per_seed = " ".join(f"{s:.3f}" for s in scores)
        print(f"{batch:>5} {epochs:>6} {compute:>7.2g}×  {summarize(scores):<22} {per_seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
