"""Pseudo-mask throughput: batched CAM and Grad-CAM vs the released code's per-image, per-class loop.

    python benchmarks/cam_speed.py [--profile cpu] [--images 256]

The released code (docs/paper_vs_code.md §3) builds a Grad-CAM object per image and runs one forward and one
backward per image *and class*; ours runs one forward per batch and one backward per class per batch.
Uses a randomly initialised classifier of the profile (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import time

import torch

from arml.cams import grad_cam, plain_cam, zoo_cam
from arml.datasets import TrainDataset
from arml.experiments import Experiment


def released_code_grad_cam(model, image: torch.Tensor) -> torch.Tensor:
    """One image, one class at a time: a fresh forward and backward for each (as `infer_fun.py` does)."""
    maps = []
    for k in range(model.num_classes):
        feats = model.features(image).detach().requires_grad_(True)
        logit = model.fc8(feats.mean(dim=(2, 3), keepdim=True)).flatten(1)[0, k]
        (grad,) = torch.autograd.grad(logit, feats)
        maps.append((grad.mean(dim=(2, 3), keepdim=True) * feats).sum(dim=1))
    return torch.cat(maps)


def rate(fn, images: torch.Tensor, batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(images), batch):
        fn(images[i : i + batch])
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    ex = Experiment(args.profile, progress=False)
    model = ex.cls_config().build_model().eval()
    data = TrainDataset(ex.data_root, ex.dataset)
    images = torch.stack([data[i][0] for i in range(min(args.images, len(data)))])
    print(
        f"{len(images)} images of {tuple(images.shape[1:])}, classifier {ex.profile.cls['backbone']}, "
        f"torch threads {torch.get_num_threads()}"
    )
    rows = [
        ("CAM, batched", lambda x: plain_cam(model, x), args.batch),
        ("Grad-CAM, batched (ours)", lambda x: grad_cam(model, x), args.batch),
        ("Grad-CAM, per image and class (released code)", lambda x: released_code_grad_cam(model, x), 1),
        ("Grad-CAM++ (grad-cam package)", lambda x: zoo_cam("gradcam++", model, x), args.batch),
        ("LayerCAM (grad-cam package)", lambda x: zoo_cam("layercam", model, x), args.batch),
    ]
    for name, fn, batch in rows:
        print(f"{name:<48} {rate(fn, images, batch):8.1f} images/s")


if __name__ == "__main__":
    main()
