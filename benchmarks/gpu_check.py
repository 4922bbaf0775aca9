"""`make gpu-check`: the paper profile's two stages on one GPU, timed, in a few minutes. Not a test.

For a lab about to run the paper's reproduction: does the code path work on this GPU, how fast is it, does
mixed precision (AMP) agree with float32, and how long would the whole reproduction take here? It trains
the paper profile's networks (stage 1: ResNet-38d + ARS at 224 px, batch 20; stage 2: three PSPNet peers on
ResNeSt-101e with SWV + L_st, batch 20) on random tensors shaped like LUAD-HistoSeg patches for ``--steps``
steps each, with AMP and ``channels_last``, and writes JSON:

* ``stage1`` / ``stage2`` / ``stage2_single``: images per second (after ``--warmup`` steps) and the peak of
  ``torch.cuda.max_memory_allocated``;
* ``amp_vs_fp32``: the losses of one batch under AMP and in float32 with the same weights, and their
  relative difference (``ok`` when below ``--amp-tolerance``);
* ``projection``: the hours the paper profile's notebooks would take on this GPU, from the measured rates and
  the number of training runs each notebook makes (counted in :data:`RUNS`).

Nothing is downloaded (random initialisation). Without CUDA it says so and writes ``"ran": false``;
``--device cpu --size 64 --batch 2 --steps 1`` is a smoke run of the same code path on a CPU (what the tests
call), whose numbers mean nothing.

    python benchmarks/gpu_check.py --out build/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# LUAD-HistoSeg's training split (docs/paper_vs_code.md), the paper profile's epochs and the training runs each
# notebook makes with the paper profile's seeds (3): stage-1 classifiers, and stage-2 runs as three-peer or
# single-network ones (the released recipe trains one network but runs it three times per batch: counted as
# 2/3 of a three-peer run).
TRAIN_IMAGES = 16678
EPOCHS = {"stage1": 20, "stage2": 10}
RUNS = {  # notebook: (stage-1 runs, three-peer runs, single-network runs)
    "01_cam_baselines": (1, 0, 0),
    "02_ars_ablation": (6, 0, 0),
    "04_swv_omega_sweep": (0, 3 * 4, 0),  # ω = 3, 5, ∞ and pixel-normalised; the rest are shared with 06
    "05_srm_loss_comparison": (0, 3 * 3, 0),  # KL, CRL, L_pt
    "06_final_benchmark": (
        1,
        3 * 3 + 2,
        3 * 2 + 3 * (3 + 2),
    ),  # + official; CE rows, fully sup. ×3, ×2 epochs
    "07_noise_lab": (0, 4 * 3 * 3 * 3 + 4 * 3 * 3 * 2 // 3, 4 * 3 * 3),  # 4 kinds × 3 rates × 3 seeds
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _timed(step, steps: int, warmup: int, batch: int, device: torch.device) -> dict:
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    return {
        "steps": steps,
        "seconds": seconds,
        "images_per_s": steps * batch / seconds,
        "peak_bytes": _peak(device),
    }


def stage1(args, device: torch.device) -> tuple[dict, dict]:
    """Stage-1 training steps (multi-label soft-margin loss, SGD), and AMP against float32 on one batch."""
    from arml.evaluation import autocast
    from arml.models import create_classifier

    torch.manual_seed(0)
    model = create_classifier("resnet38d", dropout=0.5).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    images = torch.rand(args.batch, 3, args.size, args.size, device=device).to(
        memory_format=torch.channels_last
    )
    labels = (torch.rand(args.batch, 4, device=device) < 0.5).float()

    def loss_of(amp: bool) -> torch.Tensor:
        with autocast(device, amp):
            return F.multilabel_soft_margin_loss(model(images).float(), labels)

    model.eval()  # no dropout: the two passes see the same network
    with torch.no_grad():
        pair = (loss_of(False).item(), loss_of(True).item())
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss_of(device.type == "cuda")).backward()
        scaler.step(opt)
        scaler.update()

    return _timed(step, args.steps, args.warmup, args.batch, device), {"fp32": pair[0], "amp": pair[1]}


def stage2(args, device: torch.device, peers: int) -> tuple[dict, dict | None]:
    """Stage-2 training steps of the paper profile (three peers with SWV + L_st, or one network with CE)."""
    from arml.profiles import get_profile
    from arml.recipes import build_networks
    from arml.stage2 import SegConfig

    extra = {} if peers == 3 else {"peers": 1, "omega": None, "relation": None}
    seg = {**get_profile("paper").seg, "batch_size": args.batch, "device": str(device), **extra}
    config = SegConfig("unused", "unused", **seg)
    torch.manual_seed(0)
    nets = build_networks(config, device)
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    target = torch.randint(0, 4, (args.batch, args.size, args.size), device=device)
    options = config.loss_options()
    agreement = None
    if peers == 3:
        from arml.losses import loss_terms

        for m in nets.models:
            m.eval()
        with torch.no_grad():
            values = []
            for amp in (False, nets.use_amp):
                triple = nets.recipe.triples(nets.models, images, amp)[0]
                values.append(loss_terms(*triple, target, **options).total.item())
        for m in nets.models:
            m.train()
        agreement = {"fp32": values[0], "amp": values[1]}
    result = _timed(lambda: nets.step(images, target, options), args.steps, args.warmup, args.batch, device)
    return result, agreement


def projection(rates: dict) -> dict:
    """Hours per notebook of the paper profile at the measured images per second."""
    per_run = {
        "stage1": EPOCHS["stage1"] * TRAIN_IMAGES / rates["stage1"],
        "three": EPOCHS["stage2"] * TRAIN_IMAGES / rates["stage2"],
        "single": EPOCHS["stage2"] * TRAIN_IMAGES / rates["stage2_single"],
    }
    hours = {
        nb: (s1 * per_run["stage1"] + three * per_run["three"] + single * per_run["single"]) / 3600
        for nb, (s1, three, single) in RUNS.items()
    }
    return {
        "train_images": TRAIN_IMAGES,
        "epochs": EPOCHS,
        "hours_per_run": {k: v / 3600 for k, v in per_run.items()},
        "hours": hours,
        "total_hours": sum(hours.values()),
        "note": "training only (no CAMs, validation or evaluation), from random-tensor steps of this check",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/gpu_check.json")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda[:N] or cpu")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per stage")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20, help="the paper's batch: 20")
    parser.add_argument("--size", type=int, default=224, help="patch side: LUAD-HistoSeg's 224")
    parser.add_argument(
        "--amp-tolerance", type=float, default=0.02, help="relative AMP-vs-float32 loss difference"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.device == "auto" and not torch.cuda.is_available():
        report = {
            "ran": False,
            "reason": "no CUDA device: make gpu-check needs a GPU (use --device cpu for a smoke run)",
        }
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(report["reason"])
        return 0
    device = torch.device("cuda" if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    s1, amp1 = stage1(args, device)
    print(f"stage 1: {s1['images_per_s']:.1f} images/s, peak {s1['peak_bytes']}")
    s2, amp2 = stage2(args, device, peers=3)
    print(f"stage 2, three peers: {s2['images_per_s']:.1f} images/s, peak {s2['peak_bytes']}")
    single, _ = stage2(args, device, peers=1)
    print(f"stage 2, one network: {single['images_per_s']:.1f} images/s")
    checks = {}
    for name, pair in (("stage1", amp1), ("stage2", amp2)):
        rel = abs(pair["amp"] - pair["fp32"]) / max(abs(pair["fp32"]), 1e-12)
        checks[name] = {**pair, "relative_difference": rel, "ok": bool(rel <= args.amp_tolerance)}
    rates = {
        "stage1": s1["images_per_s"],
        "stage2": s2["images_per_s"],
        "stage2_single": single["images_per_s"],
    }
    report = {
        "ran": True,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "settings": vars(args),
        "stage1": s1,
        "stage2": s2,
        "stage2_single": single,
        "amp_vs_fp32": checks,
        "projection": projection(rates),
        "seconds": time.perf_counter() - started,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    differences = ", ".join(f"{k} {v['relative_difference']:.2e}" for k, v in checks.items())
    print(f"AMP vs float32: {differences}")
    print(f"projected paper-profile training: {report['projection']['total_hours']:.1f} h on this device")
    print(f"written to {out}")
    return 0 if all(c["ok"] for c in checks.values()) and all(map(math.isfinite, rates.values())) else 1


if __name__ == "__main__":
    sys.exit(main())
