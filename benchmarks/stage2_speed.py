"""Stage-2 timing: seconds per epoch for three peers vs ``recipe="official"``, and the cost of L_st.

Not a test: it prints numbers. Two measurements:

1. One training epoch (train loop only, validation and test excluded) of three independent peers (the
   paper) and of one network run three times per batch (the released code), on a synthetic dataset written
   to a temporary folder (default: the ``cpu`` profile, 2000 training patches of 64 px; val/test cut to 32).
2. One forward + backward of :func:`arml.losses.structure_loss` at the paper's size (B = 20 images of
   4×224×224 logits): time and peak memory. On CUDA the peak is ``torch.cuda.max_memory_allocated``; on
   the CPU it is the growth of the process's peak resident set size, measured in a fresh process
   (``tracemalloc`` cannot see PyTorch's allocator).

Usage::

    .venv/bin/python benchmarks/stage2_speed.py                  # cpu profile, resnet18, batch 20
    .venv/bin/python benchmarks/stage2_speed.py --n-train 200 --skip-loss
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from arml.runtime import resolve_device


def _rss_bytes() -> int | None:
    """Current resident set size (Linux ``/proc``), or None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _structure_loss_cost(
    batch: int, channels: int, size: int, repeat: int, device: str, threads, queue
) -> None:
    """Child process: time one forward + backward of L_st and measure its peak memory."""
    from arml.losses import structure_loss

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = resolve_device(device)
    shape = (batch, channels, size, size)
    student = torch.randn(shape, device=dev, requires_grad=True)
    peers = torch.randn(shape, device=dev), torch.randn(shape, device=dev)
    target = torch.randint(0, channels, (batch, size, size), device=dev)
    target[:, : size // 8] = 255  # some ignored pixels, as background would be
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    times = []
    for _ in range(repeat + 1):  # the first run is a warm-up, and the one whose peak memory counts
        student.grad = None
        started = time.perf_counter()
        structure_loss(student, *peers, target).backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak_rss = _peak_rss_bytes()
        peak = None if base is None or peak_rss is None else peak_rss - base
    queue.put({"seconds": sum(times[1:]) / max(repeat, 1), "first_seconds": times[0], "peak_bytes": peak})


def structure_loss_cost(batch=20, channels=4, size=224, repeat=2, device="auto", threads=None) -> dict:
    """Run :func:`_structure_loss_cost` in a fresh process so that its peak memory is its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_structure_loss_cost, args=(batch, channels, size, repeat, device, threads, queue)
    )
    proc.start()
    result = queue.get()
    proc.join()
    return result


def epoch_seconds(root: Path, recipe: str, args: argparse.Namespace, out: Path) -> float:
    """Mean training seconds per epoch of one stage-2 run on ``root``."""
    from arml.stage2 import SegConfig, train_segmenter

    config = SegConfig(
        data_root=str(root),
        masks="train_gt",
        encoder=args.encoder,
        recipe=recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
        num_workers=args.num_workers,
    )
    return train_segmenter(config, out / recipe, resume=False)["seconds_per_epoch"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", help="arml.synth profile to time on (default: cpu)")
    parser.add_argument("--n-train", type=int, default=None, help="override the profile's training count")
    parser.add_argument(
        "--encoder", default="resnet18", help="timm encoder of the PSPNet (default: resnet18)"
    )
    parser.add_argument("--batch-size", type=int, default=20, help="training batch (paper: 20)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--repeat", type=int, default=2, help="timed L_st runs after one warm-up")
    parser.add_argument("--skip-train", action="store_true", help="only measure L_st")
    parser.add_argument("--skip-loss", action="store_true", help="only time the training epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    if not args.skip_train:
        from arml.synth import SYNTH_PROFILES, generate_dataset

        if args.profile not in SYNTH_PROFILES:
            parser.error(f"--profile must be one of {list(SYNTH_PROFILES)}")
        profile = SYNTH_PROFILES[args.profile]
        profile = replace(profile, n_val=min(profile.n_val, 32), n_test=min(profile.n_test, 32))
        if args.n_train is not None:
            profile = replace(profile, n_train=args.n_train)
        with tempfile.TemporaryDirectory(prefix="arml-stage2-speed-") as tmp:
            started = time.perf_counter()
            root = generate_dataset(Path(tmp) / "data", profile, seed=0, progress=not args.quiet)
            print(
                f"synthetic data: {profile.n_train} training patches of {profile.size} px "
                f"({time.perf_counter() - started:.0f} s to generate)"
            )
            paper = epoch_seconds(root, "paper", args, Path(tmp))
            official = epoch_seconds(root, "official", args, Path(tmp))
        print(f"encoder {args.encoder}, batch {args.batch_size}: seconds per training epoch")
        print(f"  three independent peers (recipe='paper')   {paper:8.1f} s")
        print(f"  one network run three times ('official')    {official:8.1f} s")
        print(f"  ratio paper / official                      {paper / official:8.2f}")

    if not args.skip_loss:
        batch, channels, size = 20, 4, 224
        d = channels * size * size
        inputs = 3 * batch * d * 4  # student and two teachers, float32
        cost = structure_loss_cost(batch, channels, size, args.repeat, args.device, args.threads)
        peak = "n/a" if cost["peak_bytes"] is None else f"{cost['peak_bytes'] / 2**20:.0f} MiB"
        print(f"structure_loss forward+backward, B={batch}, {channels}x{size}x{size} (D={d:,}):")
        print(f"  time {cost['seconds']:.2f} s (first run {cost['first_seconds']:.2f} s), peak memory {peak}")
        print(
            f"  the three B×D float32 inputs alone: {inputs / 2**20:.0f} MiB (relations come from B×B Gram matrices)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
