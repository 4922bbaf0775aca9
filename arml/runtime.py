"""Small runtime helpers shared by every stage: seeding, device choice, atomic file writes.

One place for global state (docs/architecture.md): nothing here runs on import.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_dir(kind: str) -> Path:
    """``<repo>/<kind>`` unless ``$ARML_<KIND>`` says otherwise (kinds: runs, results, figures, data)."""
    env = os.environ.get(f"ARML_{kind.upper()}")
    return Path(env) if env else REPO_ROOT / kind


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it (what the notebooks print), else as is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def to_numpy(x) -> np.ndarray:
    """A tensor (any device, detached) or array-like as a NumPy array."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) so a run is repeatable on one machine."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global state is the point
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; pass anything else to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err


TEMP_PREFIX = ".arml-tmp-"
"""Names of :func:`atomic_write`'s temporary files start with this (hidden, and recognisably arml's)."""

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_FORBIDDEN = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
}


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``).

    Elsewhere it falls back to setting and restoring it (``os.umask``), which is safe unless another thread
    creates a file in between.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_error(err: OSError, path: str | Path) -> OSError:
    """``err`` restated for the file the user asked for, when it says the disk or the folder refused.

    ENOSPC/EDQUOT become ``OSError(errno, "disk full while writing <path>")``; EACCES/EPERM/EROFS become
    ``"cannot write <path>: permission denied"`` (or ``read-only file system``; a :class:`PermissionError`
    for EACCES/EPERM). Anything else is returned unchanged.
    """
    if err.errno in _DISK_FULL:
        return OSError(err.errno, f"disk full while writing {path}")
    if err.errno in _FORBIDDEN:
        return OSError(err.errno, f"cannot write {path}: {_FORBIDDEN[err.errno]}")
    return err


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename.

    A crash part-way leaves either the old file or no file, never half a file. The temporary file is
    created in the same folder (same file system) as ``.arml-tmp-<stem>.<random><suffix>`` (hidden, so
    :func:`arml.datasets.list_pngs` skips it, and recognisable, so :func:`clean_temp_files` removes only
    arml's leftovers); it keeps the target's suffix so writers that infer the format from the name (PIL,
    ``torch.save``) still work.

    The file gets the permissions the umask gives a new file (``0o666 & ~umask``: 0644 under umask 022,
    0600 under 077), as ``open(path, "w")`` would, not ``mkstemp``'s private 0600; a replaced file gets
    them too (files written by older versions with 0600 are repaired on their next write).

    Raises:
        OSError: a full disk or quota (ENOSPC, EDQUOT) as ``"disk full while writing <path>"``; a forbidden
            or read-only folder (EACCES, EPERM, EROFS) as ``"cannot write <path>: permission denied"`` /
            ``"… read-only file system"`` (see :func:`write_error`); the original error is the cause. Other
            errors from ``write`` propagate unchanged. In every case the old file stays and no temporary
            file is left behind.
    """
    path = Path(path)
    mode = 0o666 & ~current_umask()
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f"{TEMP_PREFIX}{path.stem[:100]}.", suffix=path.suffix
        )
        tmp_path = Path(tmp)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        write(tmp_path)
        os.replace(tmp_path, path)
    except OSError as err:
        translated = write_error(err, path)
        if translated is err:
            raise
        raise translated from err
    finally:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink(missing_ok=True)
    return path


def is_temp_file(path: str | Path) -> bool:
    """Whether ``path`` is named like one of :func:`atomic_write`'s temporary files."""
    return Path(path).name.startswith(TEMP_PREFIX)


def clean_temp_files(folder: str | Path, suffix: str | None = None) -> list[Path]:
    """Remove the temporary files that killed :func:`atomic_write` calls left in ``folder``.

    Only files named ``.arml-tmp-*`` (and ending with ``suffix``, e.g. ``".png"``, when given) directly
    inside ``folder`` are removed; nothing else is touched. Call it only while no other process writes into
    ``folder``: it would remove a live write's temporary file. A missing folder holds nothing to clean.

    Returns:
        The removed files, sorted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if is_temp_file(entry) and (suffix is None or entry.name.endswith(suffix)) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def poly_lr(base_lr: float, step: int, max_steps: int, power: float = 0.9) -> float:
    """Polynomial decay used by both stages: ``base_lr · (1 − step / max_steps) ** power``."""
    if max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    return base_lr * max(0.0, 1.0 - step / max_steps) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, step: int, max_steps: int, power: float = 0.9) -> float:
    """Set every group's lr to its ``initial_lr`` under poly decay; returns the first group's lr."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = poly_lr(group["initial_lr"], step, max_steps, power)
    return optimizer.param_groups[0]["lr"]


def rng_state(loader_generator: torch.Generator | None = None) -> dict:
    """Everything random a training loop touches, so a resumed epoch replays exactly."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict, loader_generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "failed writing", "PytorchStreamWriter failed")


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """``torch.save`` through :func:`atomic_write`: an interrupted save never corrupts the last checkpoint.

    Raises:
        OSError: as :func:`atomic_write`. ``torch.save`` reports a failed write (full disk) as a
            ``RuntimeError`` (``unexpected pos …``, ``PytorchStreamWriter failed writing file …``); that one
            becomes ``OSError(ENOSPC, "disk full while writing <path>")`` too, with torch's error as the cause.
            Other errors propagate unchanged.
    """

    def write(tmp: Path) -> None:
        try:
            torch.save(state, tmp)
        except RuntimeError as err:
            if any(marker in str(err) for marker in _TORCH_WRITE_FAILED):
                raise OSError(errno.ENOSPC, f"torch.save could not write {tmp}: {err}") from err
            raise

    return atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (it holds RNG states, hence ``weights_only=False``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


def weights_digest(state_dict: dict[str, torch.Tensor], length: int = 12) -> str:
    """A short SHA-256 of a state dict's names, dtypes, shapes and values.

    Hashing the checkpoint file instead would not do: ``torch.save`` writes a fresh random serialisation id
    into every file, so two saves of the same weights differ byte for byte.
    """
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        # flattened: a 0-d tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:length]


RUNTIME_FIELDS = ("progress", "device", "num_workers", "data_root", "eval_batch_size")


def result_fields(config: dict) -> dict:
    """A config without the fields that cannot change a run's result (progress bars, device, workers,
    where the data lives): what a resumed or cached run must agree on."""
    return {k: v for k, v in config.items() if k not in RUNTIME_FIELDS}


def config_changes(saved: dict, current: dict) -> list[str]:
    """``"key: old → new"`` for every result field (see :func:`result_fields`) that differs."""
    saved, current = result_fields(saved), result_fields(current)
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} → {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def to_jsonable(value):
    """NumPy arrays/scalars → lists/numbers, NaN/inf → ``None`` (valid JSON), tuples → lists, paths → str."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data) -> Path:
    """Write ``data`` (through :func:`to_jsonable`) as indented JSON, atomically (run files and results)."""
    import json

    text = json.dumps(to_jsonable(data), indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))
