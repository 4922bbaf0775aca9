"""Stage-2 test mIoU of F_a for CE alone, +SWV, +SRM and +SWV+SRM over seeds (mean ± std), on the ARS
Grad-CAM pseudo masks of a profile, plus seconds per epoch of three independent peers vs the released
code's recipe. An experiment script: it prints numbers.

    python benchmarks/stage2_seeds.py --profile cpu --seeds 0 1 2

Runs are cached in ``runs/`` through :class:`arml.experiments.Experiment` (shared with notebook 06).
"""

from __future__ import annotations

import argparse
import time

from arml.experiments import Experiment, mean_std, ttest
from arml.paper import ABLATION, ABLATION_LABELS, OFFICIAL_RECIPE

# Table 2's rows on the ARS pseudo masks (the baseline row, on the ARS-free masks, is notebook 06's)
CONFIGS = {ABLATION_LABELS[k]: cfg for k, (source, cfg) in ABLATION.items() if source == "ars"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    ex = Experiment(args.profile, progress=False)
    pm = ex.pseudo_masks(ex.classifier(ars="both"), method="gradcam")
    print(f"pseudo masks {pm['name']}: mIoU vs synthetic truth {pm['metrics']['miou']:.3f}", flush=True)
    results: dict[str, list[dict]] = {}
    for name, overrides in CONFIGS.items():
        for seed in args.seeds:
            started = time.perf_counter()
            results.setdefault(name, []).append(ex.segmenter(pm["name"], seed=seed, **overrides))
            print(f"{name} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    official = ex.segmenter(pm["name"], seed=args.seeds[0], **OFFICIAL_RECIPE)
    base = [r["F_a"]["miou"] for r in results[ABLATION_LABELS["ars"]]]
    print(
        f"\nF_a test mIoU ({args.profile} profile, synthetic), seeds {args.seeds}; p: Welch t-test vs +ARS (CE, one network)"
    )
    for name, runs in results.items():
        mious = [r["F_a"]["miou"] for r in runs]
        s = mean_std(mious)
        dice = mean_std([r["F_a"]["mdice"] for r in runs])
        secs = mean_std([r["seconds_per_epoch"] for r in runs])
        ens = mean_std([r["ensemble"]["miou"] for r in runs if "ensemble" in r])
        ens_text = f"ensemble {ens['mean']:.3f}" if ens["n"] else "ensemble -"
        print(
            f"{name:<22} mIoU {s['mean']:.3f} ± {s['std']:.3f}  Dice {dice['mean']:.3f}  {ens_text}  "
            f"p {ttest(mious, base):.3f}  {secs['mean']:.1f} s/epoch"
        )
    print(
        f"recipe=official (one net run 3x), seed {args.seeds[0]}: F_a mIoU {official['F_a']['miou']:.3f}, "
        f"{official['seconds_per_epoch']:.1f} s/epoch"
    )


if __name__ == "__main__":
    main()
