"""Training on several processes (GPUs, machines) with torch's own engine: ``torchrun`` + DDP.

``torchrun --nproc_per_node N -m arml train-cls|train-seg …`` starts N copies of the command; each reads
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (:func:`detect`) and :func:`session` joins the process group
(``nccl`` on CUDA, each process on ``cuda:LOCAL_RANK``; ``gloo`` on the CPU). Without ``WORLD_SIZE`` (or
with ``WORLD_SIZE=1``) nothing here does anything and the trainers run the single-process code unchanged.

The design keeps a distributed run on the single-process run's *global* batches and schedule:

* :class:`GlobalBatchSampler` draws the epoch's permutation from the run's loader generator exactly as
  ``DataLoader(shuffle=True)`` does, cuts it into the same global batches of ``batch_size`` images, and
  gives each process a contiguous share (``batch_size / WORLD_SIZE`` images). The number of steps, hence the
  poly learning-rate schedule, is the single-process run's.
* :class:`GatherRows` wraps each DDP network: its output rows are gathered from every process (with
  gradient), so the loss (Eq. 9 with SWV's normalisation, Eq. 4, and the B×B relations of Eq. 8; the
  multi-label loss of stage 1) is computed on the whole global batch, identically on every process.
* Batch statistics are synchronised (:func:`sync_batchnorm`): ``torch.nn.SyncBatchNorm`` on CUDA,
  :class:`GlobalBatchNorm2d` on the CPU, where torch's has no kernel.

So one optimiser step of an N-process run equals the single-process step on the same global batch up to
float rounding (``tests/test_distributed.py``). Random draws made per image inside the processes (stage 1's
augmentations, Dropout) come from each process's own generator and differ from a single-process run.
Rank 0 alone validates, scores and writes; the others wait at a barrier.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.utils.data import Sampler

from arml.runtime import resolve_device

TIMEOUT = datetime.timedelta(hours=2)
"""How long a process waits at a collective: rank 0 alone scores the validation and test splits meanwhile."""

_RANK_SEED_STRIDE = 104_729  # process r > 0 draws its per-image randomness under seed + r · stride


@dataclass(frozen=True)
class World:
    """Where this process stands: ``size`` processes in all, this one ``rank`` (``local_rank`` on its machine)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether there are several processes."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.rank == 0


SINGLE = World()
"""One process: what :func:`detect` returns without ``WORLD_SIZE``."""


def detect(environ: dict | None = None) -> World:
    """The :class:`World` that ``torchrun``'s ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` describe (one process
    when ``WORLD_SIZE`` is unset).

    Raises:
        ValueError: values that are not integers, or out of range.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return SINGLE
    try:
        size, rank = int(environ["WORLD_SIZE"]), int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        shown = {k: environ.get(k) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        raise ValueError(
            f"WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them), got {shown}"
        ) from None
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise ValueError(
            f"need WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, got WORLD_SIZE={size}, "
            f"RANK={rank}, LOCAL_RANK={local_rank}"
        )
    return World(size, rank, local_rank)


def process_device(requested: str, world: World) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for ``auto`` (with CUDA) or ``cuda``, else the CPU.

    Raises:
        ValueError: ``cuda:N`` (each process takes the GPU of its ``LOCAL_RANK``), a device that is neither
            CUDA nor the CPU, CUDA asked for without CUDA, or fewer GPUs than processes on this machine.
    """
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = resolve_device(requested)
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"distributed training runs on CUDA (nccl) or the CPU (gloo), not {requested!r}")
    if device.index is not None:
        raise ValueError(
            f"--device {requested} under torchrun: each process uses cuda:LOCAL_RANK; pass --device cuda "
            "(or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )
    if not torch.cuda.is_available() or world.local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"process LOCAL_RANK={world.local_rank} needs cuda:{world.local_rank}, but this machine has "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA device(s); start at most "
            "that many processes per machine (--nproc_per_node) or use --device cpu"
        )
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def session(device: str, check=resolve_device) -> Iterator[tuple[World, torch.device]]:
    """Join the process group for the body (when several processes run) and leave it afterwards.

    One process: yields ``(World(), check(device))`` and does nothing else. Several: yields this process's
    :class:`World` and :func:`process_device`; the group is created here unless the caller already made it
    (then it is also left to the caller).
    """
    world = detect()
    if not world.enabled:
        yield world, check(device)
        return
    resolved = process_device(device, world)
    created = not dist.is_initialized()
    if created:
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT)
    try:
        yield world, resolved
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (a no-op with one)."""
    if dist.is_initialized():
        dist.barrier()


def broadcast(value, world: World):
    """Rank 0's ``value`` (any picklable object) on every process."""
    if not world.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value, world: World) -> list:
    """Every process's ``value`` (picklable), in rank order, on every process."""
    if not world.enabled:
        return [value]
    out = [None] * world.size
    dist.all_gather_object(out, value)
    return out


def seed_process(seed: int, world: World) -> None:
    """Give processes 1, 2, … their own random streams (Python, NumPy, torch) for per-image draws; rank 0
    keeps the single-process stream."""
    if world.rank > 0:
        seed = seed + _RANK_SEED_STRIDE * world.rank
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 - the DataLoader's augmentations draw from it
        torch.manual_seed(seed)


def _seed_worker(rank: int, worker_id: int) -> None:
    seed = (torch.initial_seed() + _RANK_SEED_STRIDE * rank) % 2**63
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def worker_init(world: World):
    """A DataLoader ``worker_init_fn`` that gives each process's workers their own streams (``None`` for one
    process): the shared loader generator would otherwise hand every process the same worker seeds."""
    return functools.partial(_seed_worker, world.rank) if world.enabled else None


# --------------------------------------------------------------------------------- data
def shares(n: int, world: World) -> list[int]:
    """How ``n`` images of one global batch are split: as evenly as possible, the first ranks one more."""
    return [n // world.size + (r < n % world.size) for r in range(world.size)]


class GlobalBatchSampler(Sampler[list[int]]):
    """This process's share of the single-process run's global batches.

    Each epoch draws ``torch.randperm(size, generator=generator)`` (what ``DataLoader(shuffle=True)``'s
    ``RandomSampler`` draws, at the same point: the first batch), cuts it into batches of ``batch_size``
    (the final one dropped with ``drop_last``) and yields the contiguous part of each batch that
    :func:`shares` gives this rank. Concatenated in rank order, the parts are the single-process batch.

    Raises:
        ValueError: ``batch_size`` not divisible by the number of processes, or a final batch with fewer
            images than processes.
    """

    def __init__(
        self, size: int, batch_size: int, *, drop_last: bool, generator: torch.Generator, world: World
    ) -> None:
        if batch_size % world.size:
            raise ValueError(
                f"--batch-size {batch_size} is the global batch; it must be divisible by the {world.size} "
                f"processes (WORLD_SIZE) so that each takes batch_size / WORLD_SIZE images"
            )
        tail = size % batch_size
        if not drop_last and 0 < tail < world.size:
            raise ValueError(
                f"the {size} training images end with a batch of {tail}, fewer than the {world.size} "
                "processes (WORLD_SIZE): change --batch-size or the number of processes"
            )
        self.size, self.batch_size, self.drop_last = size, batch_size, drop_last
        self.generator, self.world = generator, world

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else math.ceil(self.size / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=self.generator).tolist()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[start : start + self.batch_size]
            counts = shares(len(batch), self.world)
            offset = sum(counts[: self.world.rank])
            yield batch[offset : offset + counts[self.world.rank]]


def batch_span(n: int, device: torch.device) -> tuple[int, int, list[int]]:
    """``(offset, total, counts)``: where this process's ``n`` rows start in the global batch, its size, and
    every process's count (one process: ``(0, n, [n])``)."""
    if not dist.is_initialized():
        return 0, n, [n]
    counts = torch.zeros(dist.get_world_size(), dtype=torch.int64, device=device)
    counts[dist.get_rank()] = n
    dist.all_reduce(counts)
    counts = counts.tolist()
    return sum(counts[: dist.get_rank()]), sum(counts), counts


def _all_gather_rows(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])


class _GatherRowsFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, counts: list[int], rank: int) -> torch.Tensor:
        ctx.counts, ctx.rank = counts, rank
        return _all_gather_rows(x, counts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        start = sum(ctx.counts[: ctx.rank])
        # Every process computes the same loss on the same gathered rows; DDP then averages the processes'
        # gradients. Scaling this process's rows by the number of processes turns the average into the sum
        # over processes, which is the single-process gradient of the global-batch loss.
        return grad[start : start + ctx.counts[ctx.rank]] * len(ctx.counts), None, None


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The global batch: every process's rows of ``x`` (dim 0), in rank order; ``x`` itself with one process.

    Differentiable (see :class:`GatherRows`); half-precision inputs are gathered as float32.
    """
    if not dist.is_initialized():
        return x
    if x.is_floating_point() and x.dtype != torch.float32:
        x = x.float()
    _, _, counts = batch_span(x.shape[0], x.device)
    if x.requires_grad:
        return _GatherRowsFn.apply(x.contiguous(), counts, dist.get_rank())
    return _all_gather_rows(x.contiguous(), counts)


class GatherRows(nn.Module):
    """A network whose output is the global batch's (:func:`gather_rows`), so the loss sees every process's
    images. ``module`` is usually the :class:`~torch.nn.parallel.DistributedDataParallel` network."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gather_rows(self.module(x))


# --------------------------------------------------------------------------------- networks
class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, for CPU processes (``gloo``).

    Two differentiable all-reduces per call: the per-channel sums (mean), then the squared deviations
    (biased variance for normalising; the unbiased one, ``·n/(n−1)``, goes into the running variance as in
    ``nn.BatchNorm2d``). In eval mode, or with one process, it is ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dtype, x = x.dtype, x.float()
        dims, channels = (0, 2, 3), x.shape[1]
        count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        stats = dist_nn.all_reduce(torch.cat([x.sum(dims), count]))
        total = stats[-1]
        mean = stats[:-1] / total
        centred = x - mean.view(1, -1, 1, 1)
        var = dist_nn.all_reduce(centred.square().sum(dims)) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_((var * total / (total - 1).clamp(min=1)).detach(), factor)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(dtype)


def _synced_copy(bn: nn.BatchNorm2d, device: torch.device) -> nn.Module:
    cls = nn.SyncBatchNorm if device.type == "cuda" else GlobalBatchNorm2d
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    # the same Parameter and buffer objects: an optimiser built before the conversion still steps them
    for name, tensor in [*bn.named_parameters(recurse=False), *bn.named_buffers(recurse=False)]:
        setattr(new, name, tensor)
    return new.train(bn.training)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace, in place, every ``nn.BatchNorm2d`` that learns from batch statistics by one that computes them
    over all processes (``nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm2d` on the CPU).

    Frozen BatchNorms (parameters without ``requires_grad``: ResNet-38d's under the official recipe, kept in
    eval mode) stay as they are. Returns ``model``.

    Raises:
        ValueError: a trainable BatchNorm of another type (e.g. timm's ``BatchNormAct2d``), named.
    """
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if not isinstance(child, nn.modules.batchnorm._BatchNorm):
                continue
            trainable = any(p.requires_grad for p in child.parameters(recurse=False)) or not child.affine
            if not trainable or isinstance(child, nn.SyncBatchNorm | GlobalBatchNorm2d):
                continue
            if type(child) is not nn.BatchNorm2d:
                raise ValueError(
                    f"cannot synchronise the batch statistics of {type(child).__name__} ({name}) over "
                    "several processes; only nn.BatchNorm2d is converted. Run this network in one process"
                )
            setattr(parent, name, _synced_copy(child, device))
    return model


def wrap(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` (already :func:`sync_batchnorm`-ed) as the training network of a distributed run: DDP inside
    :class:`GatherRows`. Buffers are not broadcast: the synchronised BatchNorms keep them equal."""
    ddp = nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,
        find_unused_parameters=find_unused_parameters,
    )
    return GatherRows(ddp)


def record(world: World) -> dict:
    """``{"world_size": N}`` for the run files of several processes; nothing for one (files as before)."""
    return {"world_size": world.size} if world.enabled else {}


def check_resume(state: dict, world: World, path) -> None:
    """Refuse to continue ``last.pt`` (``path``) under another number of processes than wrote it.

    Raises:
        ValueError: naming both numbers and the way out.
    """
    saved = state.get("world_size", 1)
    if saved != world.size:
        raise ValueError(
            f"{path} was written by a run of {saved} process(es), this one has {world.size}; its random "
            f"states are per process: resume it with {saved} process(es), or pass --restart to start over"
        )
