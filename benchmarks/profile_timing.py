"""Seconds per epoch of stage 1 and stage 2 under a profile's settings (a benchmark, not a test).

    python benchmarks/profile_timing.py --profile cpu [--epochs 1]

Trains into a temporary folder (nothing cached is reused) and prints one line per stage.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from arml.experiments import Experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ex = Experiment(args.profile, runs=tmp, progress=False)
        print(f"profile {args.profile}: {ex.data_root}, torch threads {torch.get_num_threads()}")
        for ars in (None, "both"):
            started = time.perf_counter()
            run = ex.classifier(ars=ars, epochs=args.epochs)
            history = json.loads((Path(run) / "history.json").read_text())["history"]
            print(
                f"stage 1 ars={ars}: {history[-1]['seconds']:.1f} s/epoch ({time.perf_counter() - started:.1f} s)"
            )
        pm = ex.pseudo_masks(run, method="gradcam")
        print(f"pseudo masks: {pm['images_per_s']:.1f} images/s, mIoU {pm['metrics']['miou']:.3f}")
        for recipe, relation in (("paper", "st"), ("official", "st"), ("paper", None)):
            started = time.perf_counter()
            metrics = ex.segmenter(pm["name"], epochs=args.epochs, recipe=recipe, relation=relation)
            print(
                f"stage 2 recipe={recipe} relation={relation}: {metrics['seconds_per_epoch']:.1f} s/epoch "
                f"training ({time.perf_counter() - started:.1f} s with validation and test)"
            )


if __name__ == "__main__":
    main()
