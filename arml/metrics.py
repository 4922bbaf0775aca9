"""The paper's evaluation protocol (docs/paper_vs_code.md §5): one confusion matrix over the whole split.

Rows are ground truth, columns prediction, over the 4 tissue classes. Pixels whose ground truth is 4
(background / excluded) or 255 (ignored) are dropped. From that single matrix:

* IoU_c  = TP / (TP + FP + FN), mIoU = mean over classes that occur (NaN classes skipped);
* Dice_c = 2TP / (2TP + FP + FN), computed from the same matrix, so Dice_c = 2·IoU_c / (1 + IoU_c)
  (this reproduces the paper's Dice from its per-class IoUs, docs/paper_vs_code.md §5);
* ACC    = correctly classified kept pixels / kept pixels;
* FwIoU  = Σ_c (pixels of class c / kept pixels) · IoU_c.
"""

from __future__ import annotations

import numpy as np

from arml.datasets import BACKGROUND, IGNORE_INDEX
from arml.runtime import to_numpy


class SegmentationMetrics:
    """Accumulate a dataset-level confusion matrix and compute IoU, Dice, ACC and FwIoU.

    A prediction outside ``0..num_classes-1`` on a kept pixel (for instance 4, "background") counts as a
    miss for that pixel's true class: it lowers the class's IoU and Dice and the accuracy, but is not a
    false positive of any class. It is held in an extra "miss" column of the matrix.

    >>> m = SegmentationMetrics(num_classes=2)
    >>> m.update([[0, 1], [1, 1]], [[0, 1], [0, 4]])
    >>> r = m.compute()
    >>> round(r["miou"], 4), r["acc"]
    (0.5, 0.6666666666666666)
    """

    def __init__(self, num_classes: int = 4) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        """Forget every pixel seen so far."""
        # Column ``num_classes`` counts kept pixels predicted outside the valid range ("misses").
        self._matrix = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    @property
    def confusion_matrix(self) -> np.ndarray:
        """The ``K×K`` matrix (rows = truth, columns = prediction) without the miss column."""
        return self._matrix[:, : self.num_classes].copy()

    def update(self, pred, target) -> None:
        """Add one batch. ``pred`` and ``target`` are integer label maps of the same shape (any batch shape).

        Pass ``logits.argmax(1)``, not logits. Targets may contain 0..K-1, 4 (background) and 255 (ignored).
        """
        pred, target = to_numpy(pred), to_numpy(target)
        if pred.shape != target.shape:
            raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}")
        if pred.dtype.kind not in "iu" or target.dtype.kind not in "iu":
            raise ValueError(
                f"pred and target must be integer label maps (use logits.argmax(1)), got {pred.dtype} and "
                f"{target.dtype}"
            )
        pred, target = pred.ravel().astype(np.int64), target.ravel().astype(np.int64)
        k = self.num_classes
        keep = (target >= 0) & (target < k)
        bad = target[~keep]
        bad = bad[(bad != BACKGROUND) & (bad != IGNORE_INDEX)]
        if bad.size:
            raise ValueError(
                f"target values must be 0..{k - 1}, {BACKGROUND} (background) or {IGNORE_INDEX} (ignore); "
                f"found {np.unique(bad)[:5].tolist()}"
            )
        pred, target = pred[keep], target[keep]
        pred = np.where((pred >= 0) & (pred < k), pred, k)
        self._matrix += np.bincount(target * (k + 1) + pred, minlength=k * (k + 1)).reshape(k, k + 1)

    def compute(self) -> dict[str, object]:
        """Return ``iou``/``dice`` (per-class arrays, NaN for absent classes), ``miou``, ``mdice``, ``acc``,
        ``fwiou`` (fractions in [0, 1]) and ``pixels`` (kept pixel count)."""
        k = self.num_classes
        m = self._matrix
        tp = np.diag(m[:, :k]).astype(np.float64)
        support = m.sum(axis=1).astype(np.float64)  # true pixels per class (misses included)
        predicted = m[:, :k].sum(axis=0).astype(np.float64)
        fp = predicted - tp
        fn = support - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = tp / (tp + fp + fn)
            dice = 2 * tp / (2 * tp + fp + fn)
        total = support.sum()
        present = support > 0
        return {
            "iou": iou,
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "dice": dice,
            "mdice": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
            "acc": float(tp.sum() / total) if total else float("nan"),
            "fwiou": float((support[present] / total * iou[present]).sum()) if total else float("nan"),
            "pixels": int(total),
        }


def summarize(result: dict, class_names: tuple[str, ...] | None = None) -> str:
    """A one-line human summary in percent, e.g. ``mIoU 71.20 | Dice 82.10 | ACC 85.00 | TE 70.1 …``."""
    names = class_names or tuple(f"c{i}" for i in range(len(result["iou"])))
    per_class = " ".join(f"{n} {100 * v:.1f}" for n, v in zip(names, result["iou"], strict=True))
    return (
        f"mIoU {100 * result['miou']:.2f} | Dice {100 * result['mdice']:.2f} | ACC {100 * result['acc']:.2f} | "
        f"FwIoU {100 * result['fwiou']:.2f} | IoU {per_class}"
    )
