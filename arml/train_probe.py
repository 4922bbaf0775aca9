"""What stage 2 does to its own training labels, epoch by epoch: memorisation and the votes of SWV.

Stage 2 trains on pseudo masks that are partly wrong. Two questions decide whether a noise-robust loss
helps, and both are answered on the *training* images (the ones whose labels are noisy):

* **Memorisation** (the curve of Arpit et al. 2017 for label noise): F_a's prediction is compared each epoch
  with the pseudo masks it is trained on and with the truth. Early in training a network fits the easy,
  consistent patterns, so its agreement with the *truth* rises; later it starts to reproduce the label
  errors, so its agreement with the *pseudo masks* keeps rising while the truth's stalls or falls. The gap
  between F_a-vs-truth and pseudo-masks-vs-truth says whether stage 2 *cleaned* its labels (positive) or
  copied them (zero or negative).
* **Precision of SWV's down-weighting** (Eq. 4): SWV gives weight 1/ω to the pixels where the two voters
  F_b and F_c disagree. That helps only if those pixels are more often *wrongly labelled* than pixels in
  general: ``disputed_wrong`` = P(pseudo label wrong | voters disagree) against the base rate
  ``pm_wrong`` = P(pseudo label wrong). A ratio near 1 means the votes pick pixels at random.

Everything needs the training truth, which only the synthetic data has (``train_gt/``); on real data only
the agreement with the pseudo masks is measured. The probe is a fixed, evenly spaced subset of at most
``limit`` training images, without augmentation, read once into memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from arml.datasets import BACKGROUND, NUM_CLASSES, TrainDataset, read_mask
from arml.metrics import SegmentationMetrics

KEYS = ("pm_miou", "truth_miou", "pm_truth_miou", "voter_agreement", "disputed_wrong", "pm_wrong")


@dataclass
class ProbeSet:
    """Training images with their pseudo masks and (synthetic data only) their true masks, as tensors."""

    images: torch.Tensor  # N×3×H×W float
    pseudo: torch.Tensor  # N×H×W int64, 0..3 classes, 4 excluded
    truth: torch.Tensor | None  # N×H×W int64 or None (real data: no training truth)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_probe(root: str | Path, dataset: str, mask_dir: str | Path, limit: int = 512) -> ProbeSet | None:
    """At most ``limit`` evenly spaced training images with their masks (``None`` when ``limit`` is 0).

    The truth is read from ``root/train_gt`` when that folder exists.
    """
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an int >= 0, got {limit!r}")
    if limit == 0:
        return None
    data = TrainDataset(root, dataset, mask_dir=mask_dir)
    picks = np.unique(np.linspace(0, len(data) - 1, min(limit, len(data))).round().astype(int))
    items = [data[int(i)] for i in picks]
    images = torch.stack([item[0] for item in items])
    pseudo = torch.stack([item[1] for item in items])
    truth_dir = Path(root) / "train_gt"
    truth = None
    if truth_dir.is_dir():
        truth = torch.stack(
            [
                torch.from_numpy(
                    read_mask(truth_dir / data.files[int(i)].name, images.shape[-2:]).astype(np.int64)
                )
                for i in picks
            ]
        )
    return ProbeSet(images, pseudo, truth)


@torch.no_grad()
def probe_networks(
    models: Sequence[nn.Module], probe: ProbeSet, device: torch.device | str = "cpu", batch_size: int = 64
) -> dict[str, float | None]:
    """Score F_a (``models[0]``) on the probe set; with three networks, also the votes of F_b and F_c.

    Returns (fractions, None where undefined):
        ``pm_miou``: mIoU of F_a's prediction against the pseudo masks (how much of its labels it fits);
        ``truth_miou``: against the truth (how right it is on its own training images);
        ``pm_truth_miou``: the pseudo masks against the truth on the same images (what F_a started from);
        ``voter_agreement``: share of scored pixels where F_b and F_c predict the same class;
        ``disputed_wrong``: among the pixels where they disagree, the share whose pseudo label is wrong;
        ``pm_wrong``: the share of all scored pixels whose pseudo label is wrong (the base rate).
    Scored pixels are those with a class in both the pseudo mask and the truth (neither is 4).
    """
    device = torch.device(device)
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    fit, right, labels = (SegmentationMetrics(NUM_CLASSES) for _ in range(3))
    agree = disputed = disputed_wrong = wrong = scored = 0
    try:
        for start in range(0, len(probe), batch_size):
            images = probe.images[start : start + batch_size].to(device)
            preds = [m(images).argmax(1).cpu() for m in models]
            pseudo = probe.pseudo[start : start + batch_size]
            fit.update(preds[0], pseudo)
            if probe.truth is None:
                continue
            truth = probe.truth[start : start + batch_size]
            right.update(preds[0], truth)
            labels.update(pseudo, truth)
            keep = (pseudo != BACKGROUND) & (truth != BACKGROUND)
            mislabelled = keep & (pseudo != truth)
            scored += int(keep.sum())
            wrong += int(mislabelled.sum())
            if len(preds) >= 3:
                split = keep & (preds[1] != preds[2])
                agree += int((keep & (preds[1] == preds[2])).sum())
                disputed += int(split.sum())
                disputed_wrong += int((split & mislabelled).sum())
    finally:
        for m, mode in zip(models, was_training, strict=True):
            m.train(mode)
    has_truth, has_votes = probe.truth is not None and scored > 0, len(models) >= 3

    def ratio(a: int, b: int, ok: bool) -> float | None:
        return a / b if ok and b > 0 else None

    return {
        "pm_miou": _miou(fit),
        "truth_miou": _miou(right) if probe.truth is not None else None,
        "pm_truth_miou": _miou(labels) if probe.truth is not None else None,
        "voter_agreement": ratio(agree, scored, has_truth and has_votes),
        "disputed_wrong": ratio(disputed_wrong, disputed, has_truth and has_votes),
        "pm_wrong": ratio(wrong, scored, has_truth),
    }


def _miou(metrics: SegmentationMetrics) -> float | None:
    value = metrics.compute()["miou"]
    return None if value is None or not np.isfinite(value) else float(value)


def epoch_series(histories: Sequence[Sequence[dict]], key: str, probe: bool = False) -> np.ndarray:
    """``seeds × epochs`` array of ``key`` from each run's history (``probe``: from its ``train_probe``),
    NaN where missing; runs of different length are padded with NaN."""
    n = max((len(h) for h in histories), default=0)
    out = np.full((len(histories), n), np.nan)
    for i, history in enumerate(histories):
        for j, epoch in enumerate(history):
            source = (epoch.get("train_probe") or {}) if probe else epoch
            value = source.get(key)
            if isinstance(value, dict):  # per-network logs (voter_agreement): F_a's
                value = value.get("F_a")
            out[i, j] = np.nan if value is None else value
    return out
