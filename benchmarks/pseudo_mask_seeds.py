"""Pseudo-mask mIoU against the synthetic truth for CAM, Grad-CAM, Grad-CAM++ and LayerCAM, with and
without ARS, over several stage-1 seeds (mean ± std). An experiment script: it prints numbers.

    python benchmarks/pseudo_mask_seeds.py --profile cpu --seeds 0 1 2 [--limit N]

Classifiers are trained (or reused from ``runs/``) with :class:`arml.experiments.Experiment`; the CAMs of
all methods are computed in memory on the first ``--limit`` training images (default: all).
"""

from __future__ import annotations

import argparse
import time

from arml.analysis import pseudo_masks_from_cams, read_masks, score_masks
from arml.cams import collect_cams
from arml.datasets import TrainDataset
from arml.experiments import Experiment, mean_std
from arml.stage1 import load_classifier

METHODS = ("cam", "gradcam", "gradcam++", "layercam")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    ex = Experiment(args.profile, progress=False)
    data = TrainDataset(ex.data_root, ex.dataset)
    n = len(data) if args.limit is None else min(args.limit, len(data))
    truth = read_masks(ex.data_root / "train_gt", [p.name for p in data.files[:n]])
    scores: dict[tuple[str, str], list[float]] = {}
    for ars in (None, "both"):
        for seed in args.seeds:
            started = time.perf_counter()
            model = load_classifier(ex.classifier(seed=seed, ars=ars))
            for method in METHODS:
                got = collect_cams(model, data, method, limit=n, progress=False)
                masks = pseudo_masks_from_cams(got, dataset=ex.dataset)
                miou = score_masks(masks, truth)["miou"]
                scores.setdefault((str(ars), method), []).append(miou)
            print(f"ars={ars} seed={seed}: {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\npseudo-mask mIoU on {n} synthetic training images ({args.profile} profile), seeds {args.seeds}")
    print(f"{'method':<10} {'no ARS':>16} {'ARS (both)':>16}")
    for method in METHODS:
        cells = []
        for ars in ("None", "both"):
            s = mean_std(scores[(ars, method)])
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}")
        print(f"{method:<10} {cells[0]:>16} {cells[1]:>16}")


if __name__ == "__main__":
    main()
