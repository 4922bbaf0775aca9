"""Named profiles: one set of sizes per use (docs/architecture.md).

* ``quick`` — CI and the notebook tests: a tiny synthetic dataset, seconds per stage.
* ``cpu`` — the default main job (``make reproduce``): minutes on a 2-core laptop.
* ``paper`` — the paper's settings (docs/paper_vs_code.md §2.2, §4.5): ResNet-38d, 224 px, 20 stage-1 epochs
  with batch 20 and lr 0.01; PSPNet on ResNeSt-101e, 10 epochs, batch 20, lr 5e-3. For a GPU and the
  real datasets.
* ``paper-smoke`` — the ``paper`` profile's networks, 224-px input and recipe on 8 synthetic training images,
  one epoch of two optimiser steps per stage: proves on a CPU the code path a GPU user of ``paper`` runs
  (``tests/test_paper_smoke.py``, ``make smoke-paper``). Its numbers mean nothing.

A profile holds *overrides* of the stage configs (:class:`~arml.stage1.ClsConfig`,
:class:`~arml.stage2.SegConfig`), so the dataclass defaults stay the single source of every other value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Profile:
    """Sizes for one use of the pipeline; build stage configs with :meth:`cls_config` / :meth:`seg_config`."""

    name: str
    description: str
    synth: str
    seeds: tuple[int, ...]  # stage-2 seeds of the final benchmark (notebook 06)
    sweep_seeds: tuple[int, ...] = (0,)  # stage-2 seeds of the ω sweep and the loss comparison (04, 05)
    cls: dict = field(default_factory=dict)
    seg: dict = field(default_factory=dict)
    pseudo: dict = field(default_factory=dict)
    cam_limit: int | None = None  # images per CAM method in the notebooks' comparisons (None = all)
    # Stage-2 runs trained at once in worker processes (each with cpu_count // workers threads). On 2 CPU
    # cores two one-thread runs do ~1.35× the work of one two-thread run. 1 = in the notebook's process.
    workers: int = 1
    # The noise laboratory (notebook 07): corruption kinds (arml.noise) × rates of wrong tissue pixels, each
    # trained with every method of arml.paper.NOISE_METHODS over noise_seeds.
    noise_kinds: tuple[str, ...] = ("boundary", "swap", "drop", "blur")
    noise_rates: tuple[float, ...] = (0.05, 0.1, 0.2)
    noise_seeds: tuple[int, ...] = (0, 1, 2)

    def cls_config(self, data_root, **overrides):
        from arml.stage1 import ClsConfig

        return ClsConfig(data_root=str(data_root), **{**self.cls, **overrides})

    def seg_config(self, data_root, **overrides):
        from arml.stage2 import SegConfig

        return SegConfig(data_root=str(data_root), **{**self.seg, **overrides})

    def pseudo_config(self, **overrides):
        from arml.pseudo_masks import PseudoMaskConfig

        return PseudoMaskConfig(**{**self.pseudo, **overrides})


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        description="CI smoke profile: tiny synthetic data, seconds per stage",
        synth="quick",
        seeds=(0, 1),
        cls={"backbone": "resnet10t", "feature_level": 3, "epochs": 3, "batch_size": 16, "lr": 0.05},
        seg={"encoder": "resnet10t", "epochs": 2, "batch_size": 8},
        cam_limit=48,
        noise_kinds=("boundary", "swap"),
        noise_rates=(0.1, 0.2),
        noise_seeds=(0,),
    ),
    "cpu": Profile(
        name="cpu",
        description="default main job: synthetic 64-px data, minutes on 2 CPU cores",
        synth="cpu",
        seeds=(0, 1, 2),
        cls={"backbone": "resnet10t", "feature_level": 3, "epochs": 6, "batch_size": 32, "lr": 0.05},
        # AdamW, batch 16, 8 epochs (200 steps). Not converged: CE on the ARS pseudo masks over 6 seeds scores
        # 0.682 ± 0.040 here, 0.720 ± 0.007 after 16 epochs and 0.734 ± 0.011 at batch 8 × 12 epochs, which
        # roughly doubles the time of make reproduce (docs/architecture.md, "Convergence";
        # benchmarks/convergence_grid.py). Notebook 06 re-checks it on every run with twice the epochs. The
        # training probe reads 160 of the 400 patches.
        seg={
            "encoder": "resnet10t",
            "epochs": 8,
            "batch_size": 16,
            "optimizer": "adamw",
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "probe_images": 160,
        },
        cam_limit=96,
        workers=2,
        # one kind (whole regions swapped: most wrong pixels of the CAM masks lie away from boundaries,
        # notebook 03) × 3 rates × 5 methods × 3 seeds (~15 min on 2 cores); 07 takes the kinds as a
        # parameter: papermill -p KINDS '["boundary", "swap"]'
        noise_kinds=("swap",),
    ),
    "paper": Profile(
        name="paper",
        description="the paper's settings (GPU, real LUAD-HistoSeg or BCSS-WSSS)",
        synth="paper",
        seeds=(0, 1, 2),
        sweep_seeds=(0, 1, 2),
        cls={"backbone": "resnet38d", "epochs": 20, "batch_size": 20, "lr": 0.01, "dropout": 0.5},
        seg={"arch": "pspnet", "encoder": "resnest101e", "epochs": 10, "batch_size": 20, "lr": 5e-3},
        cam_limit=None,
    ),
}


def _smoke(paper: Profile) -> Profile:
    """``paper`` shrunk to a code-path check: only sizes change (epochs, batch sizes, seeds, CAM and noise
    counts); the backbone, ARS, recipe, segmenter, learning rates and every default stay the paper's."""
    return replace(
        paper,
        name="paper-smoke",
        description="the paper profile's networks, 224 px and recipe on 8 synthetic images: a code-path check",
        synth="paper-smoke",
        seeds=(0,),
        sweep_seeds=(0,),
        cls={**paper.cls, "epochs": 1, "batch_size": 4},  # 8 training images: 2 SGD steps
        seg={**paper.seg, "epochs": 1, "batch_size": 4},  # 2 steps of the three peers
        pseudo={**paper.pseudo, "batch_size": 4},
        cam_limit=2,
        workers=1,
        noise_kinds=paper.noise_kinds[:1],
        noise_rates=paper.noise_rates[:1],
        noise_seeds=(0,),
    )


PROFILES["paper-smoke"] = _smoke(PROFILES["paper"])
PROFILE_NAMES = tuple(PROFILES)


def get_profile(name: str | None = None) -> Profile:
    """Look a profile up by name; ``None`` reads ``$ARML_PROFILE`` and falls back to ``"cpu"``."""
    name = name or os.environ.get("ARML_PROFILE") or "cpu"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {list(PROFILES)}")
    return PROFILES[name]
