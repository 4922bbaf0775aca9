"""Self-checks for the notebooks' exercises: ``check_*(fn)`` compares a student's function with ``arml``'s on
random inputs and prints a pass or a hint (never raises, so a student copy runs from top to bottom).

Stage 1 (notebooks 01–03, :mod:`arml.exercises.stage1`): :func:`check_normalize_cams`,
:func:`check_background`, :func:`check_cca` (Eq. 1–2), :func:`check_reactivation` (Eq. 3), :func:`check_iou`.
Stage 2 (notebooks 04–07, :mod:`arml.exercises.stage2`): SWV (Eq. 4), the relation losses (Eq. 5–8) and more.

>>> from arml.exercises import check_cca
"""

from arml.exercises import stage1, stage2
from arml.exercises.stage1 import *  # noqa: F403
from arml.exercises.stage2 import *  # noqa: F403

__all__ = [*stage1.__all__, *stage2.__all__]
