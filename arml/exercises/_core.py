"""What every exercise check shares: run the student's function safely and print one clear verdict."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence

import numpy as np
import torch


def attempt(fn: Callable, *args, **kwargs) -> tuple[object | None, str | None]:
    """Call ``fn``; return ``(result, None)``, or ``(None, message)`` if it raised (a stub raises
    ``NotImplementedError``), so a check never stops a notebook that is run from top to bottom."""
    try:
        return fn(*args, **kwargs), None
    except NotImplementedError:
        return None, "not implemented yet: replace the `raise NotImplementedError` with your code"
    except Exception as err:  # the student's code failed: say where, briefly
        last = traceback.extract_tb(err.__traceback__)[-1]
        return None, f"your function raised {type(err).__name__}: {err} (line {last.lineno})"


def report(name: str, ok: bool, hint: str = "") -> bool:
    """Print ``✓ name: passed`` or ``✗ name: hint`` and return ``ok``."""
    print(f"✓ {name}: passed" if ok else f"✗ {name}: {hint}")
    return ok


def as_tensor(value) -> torch.Tensor | None:
    """``value`` as a float64 tensor (from a tensor, an array, a list or a number), or None if it is not numeric."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return torch.from_numpy(array)


def is_close(got, want, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """``torch.testing.assert_close`` as a bool: same shape, values within ``atol + rtol·|want|``, NaN = NaN."""
    got, want = as_tensor(got), as_tensor(want)
    if got is None or want is None or got.shape != want.shape:
        return False
    try:
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError:
        return False
    return True


def mismatch(got, want, rtol: float = 1e-4, atol: float = 1e-5, what: str = "your result") -> str | None:
    """None when ``got`` matches ``want`` (see :func:`is_close`); otherwise a one-line hint saying what differs:
    nothing returned, not a number, the shape, NaNs, or the largest difference and where it is."""
    if got is None:
        return f"{what} is None: did you forget the `return`?"
    g, w = as_tensor(got), as_tensor(want)
    if g is None:
        return f"{what} should be a tensor or an array, got {type(got).__name__}"
    if g.shape != w.shape:
        return f"{what} has shape {tuple(g.shape)}, expected {tuple(w.shape)}"
    if is_close(g, w, rtol, atol):
        return None
    if (g.isnan() & ~w.isnan()).any():
        return f"{what} contains NaN where the expected values are finite (a division by zero?)"
    if (w.isnan() & ~g.isnan()).any():
        return f"{what} has numbers where NaN is expected (an undefined case, e.g. 0/0, must stay NaN)"
    diff = (g - w).abs().nan_to_num(0.0)
    index = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), tuple(g.shape)))
    return (
        f"values differ: largest |yours − expected| = {float(diff.max()):.3g} at index {index} "
        f"(yours {float(g[index]):.4g}, expected {float(w[index]):.4g})"
    )


def run_cases(
    name: str,
    fn: Callable,
    cases: Sequence[tuple[tuple, object]],
    mistakes: Sequence[tuple[str, Callable]] = (),
    tip: str = "",
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> bool:
    """Run ``fn(*args)`` on every ``(args, expected)`` case and print one verdict; never raises.

    Tensors and arrays in ``args`` are copied before each call, so a function that changes its inputs in
    place cannot spoil the expected values. When a result differs, each ``(hint, wrong)`` of ``mistakes`` is
    tried: if the result equals ``wrong(*args)`` (a known wrong answer), that hint is printed; otherwise the
    generic difference (:func:`mismatch`) followed by ``tip``.
    """
    if not callable(fn):
        return report(
            name, False, f"pass your function itself (e.g. `{name}(my_fn)`), got {type(fn).__name__}"
        )
    for number, (args, want) in enumerate(cases, start=1):
        got, error = attempt(fn, *_copies(args))
        if error is not None:
            return report(name, False, error)
        problem = mismatch(got, want, rtol, atol)
        if problem is None:
            continue
        for hint, wrong in mistakes:
            answer, failed = attempt(wrong, *_copies(args))
            if failed is None and is_close(got, answer, rtol, atol):
                return report(name, False, f"{hint} (case {number} of {len(cases)})")
        return report(name, False, f"{problem} (case {number} of {len(cases)}). {tip}".rstrip())
    return report(name, True)


def _copies(args: tuple) -> tuple:
    return tuple(
        a.detach().clone() if isinstance(a, torch.Tensor) else a.copy() if isinstance(a, np.ndarray) else a
        for a in args
    )
