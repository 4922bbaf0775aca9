"""Every option list of the package, defined once, and the small machinery the stage configs share.

The lists here are the single source of the choices that configs validate, models and losses check and the
command line offers (``arml … --help`` is generated from the config dataclasses, see :mod:`arml.cli`):

>>> RECIPES
('paper', 'official')
>>> check_choice("recipe", "paper", RECIPES)
>>> parse_omega("inf")
inf

A config dataclass (:class:`~arml.stage1.ClsConfig`, :class:`~arml.pseudo_masks.PseudoMaskConfig`,
:class:`~arml.stage2.SegConfig`) declares each field with :func:`option`, which carries the one-line help
and the valid choices, and inherits :class:`Config` for strict ``to_dict`` / ``from_dict``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

# ----------------------------------------------------------------------------------------------- data
DATASETS = ("luad", "bcss")  # file-name grammar, class order and palette (docs/paper_vs_code.md §1)
SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")  # the splits with pixel masks

# ---------------------------------------------------------------------------------------------- recipe
RECIPES = ("paper", "official")  # the paper with evident bugs fixed / the released code (docs §6)

# ------------------------------------------------------------------------------------- stage 1 and ARS
ARS_PARTS = (None, "cca", "reactivation", "both")  # None = the plain-CAM classifier
REACTIVATION_VARIANTS = ("code", "eq3")  # the released two-gate module / Eq. (3) as printed
INPUT_NORMS = ("none", "imagenet")  # the released code feeds [0, 1] images
OUTPUT_STRIDES = (8, 16, 32)

# ------------------------------------------------------------------------------------------ pseudo masks
CAM_NORMALIZATIONS = ("global", "per_class")  # min-max of a CAM stack: over all classes / per class map
BACKGROUND_RULES = ("luad", "none")  # LUAD: white glass is class 4 / BCSS: white fat is tissue

# ----------------------------------------------------------------------------------------------- stage 2
# (registries with code behind them live beside it: CAM methods in arml.cams, relation losses in
# arml.losses, segmenter architectures in arml.models)
SWV_NORMALIZATIONS = ("weights", "pixels")  # divide Eq. (4) by the sum of weights / the valid pixels
PEER_COUNTS = (1, 3)  # one network (plain CE) or the three peers of mutual learning
PEER_NAMES = ("F_a", "F_b", "F_c")
ENSEMBLE = "ensemble"


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise ``ValueError`` naming the option and its valid choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def parse_omega(value: str | float | None) -> float | None:
    """SWV's ω from text or a number: ``"none"``/``"n/a"``/None → None (plain CE), ``"inf"`` → ``math.inf``.

    Raises:
        ValueError: not a number, or below 1 (Eq. 4 needs ω ≥ 1).
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "n/a")):
        return None
    try:
        omega = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"omega must be a number >= 1, 'inf' or 'none', got {value!r}") from None
    if math.isnan(omega) or omega < 1:
        raise ValueError(f"omega must be a number >= 1, 'inf' or 'none', got {value!r}")
    return omega


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",  # noqa: A002 - the argparse word
    *,
    choices: Sequence[object] | None = None,
    factory: Callable[[], Any] | None = None,
    cli: bool = True,
    aliases: Sequence[str] = (),
) -> Any:
    """A dataclass field with its one-line ``help`` and valid ``choices`` (what ``arml --help`` shows).

    ``cli=False`` keeps a field off the generated command line (one the command sets itself, such as
    ``data_root`` from ``--data``); ``aliases`` are extra flags (``--cam`` for ``method``).
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "cli": cli,
        "aliases": tuple(aliases),
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Config:
    """Base of the stage configs: strict ``from_dict`` (unknown keys raise), ``to_dict``, choice checks."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict):
        """Inverse of :meth:`to_dict`; a key the dataclass does not have is an error naming the valid ones."""
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        known = {f.name for f in fields}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; valid fields: {sorted(known)}")
        required = {
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"{cls.__name__} fields {missing} are missing (given: {sorted(data)})")
        return cls(**data)

    def check_choices(self) -> None:
        """Check every field declared with ``choices`` (see :func:`option`)."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            choices = f.metadata.get("choices")
            if choices is not None:
                check_choice(f"{type(self).__name__}.{f.name}", getattr(self, f.name), choices)


NOISE_KINDS = ("boundary", "swap", "drop", "blur")  # arml.noise: simulated CAM errors on the truth
