"""How fast the built-in synthetic dataset is written (target: the cpu profile in under a minute on 2 cores).

Usage: ``python benchmarks/synth_speed.py [--profile cpu] [--workers N]``. Writes into a temporary folder
that is removed afterwards, and prints patches per second and total seconds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from arml.options import SPLITS
from arml.synth import SYNTH_PROFILES, generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=tuple(SYNTH_PROFILES), default="cpu")
    parser.add_argument("--workers", type=int, default=None, help="default: os.cpu_count()")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = SYNTH_PROFILES[args.profile]
    total = sum(config.count(split) for split in SPLITS)
    workers = args.workers if args.workers is not None else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="arml-synth-bench-") as tmp:
        start = time.perf_counter()
        generate_dataset(
            Path(tmp) / args.profile, args.profile, seed=args.seed, workers=workers, progress=False
        )
        seconds = time.perf_counter() - start
    print(
        f"synth profile={args.profile} size={config.size}px patches={total} workers={workers} "
        f"(cpu_count={os.cpu_count()}): {seconds:.1f} s, {total / seconds:.1f} patches/s"
    )


if __name__ == "__main__":
    main()
